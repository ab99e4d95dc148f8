"""The audit log: every read or change of personal or registry data, appended (who, what,
when, why) to a capped Redis stream."""

from __future__ import annotations

from datetime import UTC, datetime

from infra.clients import Clients

AUDIT_MAXLEN = 1_000_000


def audit_entry(
    clients: Clients, actor: str, action: str, subject: str, why: str, *, person: bool = True
) -> tuple[str, dict[str, str], int]:
    """(stream, fields, maxlen) of one audit record, for a caller that pipelines it."""
    return (
        f"{clients.settings.redis_prefix}audit",
        {
            "at": datetime.now(UTC).isoformat(),
            "actor": actor[:100],
            "action": action,
            ("person_key" if person else "subject"): (
                clients.pseudonymize(subject) if person else subject[:200]
            ),
            "why": why[:200],
        },
        AUDIT_MAXLEN,
    )


async def audit(
    clients: Clients, actor: str, action: str, subject: str, why: str, *, person: bool = True
) -> None:
    """Append one record; a person is recorded by pseudonym, never by ID number."""
    stream, fields, maxlen = audit_entry(clients, actor, action, subject, why, person=person)
    await clients.redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
