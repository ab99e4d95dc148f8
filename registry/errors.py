"""Errors of the registry domain: one root, one-line subclasses."""

QUOTE_LIMIT = 40


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A bad value as shown in an error: its repr, cut to a short prefix (a hostile 20 MB
    field must not come back in the answer)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text):,} characters)"


class RegistryError(Exception):
    """Root of every registry error."""


class InvalidPersonalId(RegistryError):
    """A personal ID number breaks one or more structural rules."""

    def __init__(self, number: str, errors: list[str]) -> None:
        self.number = number
        self.errors = errors
        super().__init__(f"invalid personal ID {quote(number)}: " + "; ".join(errors))


class InvalidQrPayload(RegistryError):
    """A CCCD QR text is not a valid chip-card payload."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid CCCD QR payload: " + "; ".join(errors))
