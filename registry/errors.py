"""Errors of the registry domain: one root, one-line subclasses."""


class RegistryError(Exception):
    """Root of every registry error."""


class InvalidPersonalId(RegistryError):
    """A personal ID number breaks one or more structural rules."""

    def __init__(self, number: str, errors: list[str]) -> None:
        self.number = number
        self.errors = errors
        super().__init__(f"invalid personal ID {number!r}: " + "; ".join(errors))


class InvalidQrPayload(RegistryError):
    """A CCCD QR text is not a valid chip-card payload."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid CCCD QR payload: " + "; ".join(errors))
