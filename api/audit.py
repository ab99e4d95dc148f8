"""The audit log: every read or export of personal data (and every change of registry
data) appends one record: who (the authenticated caller and their role), which route,
which people (by pseudonym, never by ID number), when, and the stated purpose
(``X-Purpose``). Records go to a capped Redis stream on the request path and are drained
in order into ClickHouse ``audit_log`` (infra/audit.py), which keeps them all.

Routes take :data:`AuditDep` and call it once they know whom they are showing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Header, Request

from api.access import principal_of
from api.deps import ClientsDep
from infra.clients import Clients
from infra.credentials import Principal

# Drained entries are trimmed at once (infra/audit.py); this cap only bites when the
# store's owner has been away for hours (about 5 h of 500 gate checks a second).
AUDIT_MAXLEN = 10_000_000
MAX_PEOPLE = 10_000  # people named in one record; the count is always kept


def audit_entry(
    clients: Clients,
    who: Principal,
    route: str,
    action: str,
    people: Iterable[str] = (),
    purpose: str = "",
    subject: str = "",
) -> tuple[str, dict[str, str], int]:
    """(stream, fields, maxlen) of one audit record, for a caller that pipelines it.
    ``people`` are personal IDs (or pseudonyms already): stored by pseudonym."""
    keys = sorted(
        {p if len(p) != 12 or not p.isdigit() else clients.pseudonymize(p) for p in people}
    )
    return (
        f"{clients.settings.redis_prefix}audit",
        {
            "at": datetime.now(UTC).isoformat(),
            "actor": who.name[:100],
            "role": who.role,
            "route": route[:200],
            "action": action,
            "person_key": keys[0] if len(keys) == 1 else "",
            "people": ",".join(keys[:MAX_PEOPLE]),
            "people_count": str(len(keys)),
            "subject": subject[:200],
            "why": purpose[:200],
        },
        AUDIT_MAXLEN,
    )


class Auditor:
    """The audit log bound to one request: its caller, route and stated purpose."""

    def __init__(self, clients: Clients, who: Principal, route: str, purpose: str) -> None:
        self.clients = clients
        self.who = who
        self.route = route
        self.purpose = purpose

    def entry(
        self, action: str, people: Iterable[str] = (), subject: str = ""
    ) -> tuple[str, dict[str, str], int]:
        return audit_entry(
            self.clients, self.who, self.route, action, people, self.purpose or action, subject
        )

    async def __call__(self, action: str, people: Iterable[str] = (), subject: str = "") -> None:
        stream, fields, maxlen = self.entry(action, people, subject)
        await self.clients.redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


def _auditor(
    request: Request,
    clients: ClientsDep,
    x_purpose: Annotated[
        str, Header(max_length=200, description="why this data is needed (audited)")
    ] = "",
) -> Auditor:
    route = getattr(request.scope.get("route"), "path", request.url.path)
    if x_purpose.startswith("UTF-8''"):  # RFC 8187: how a browser sends non-Latin-1 text
        x_purpose = unquote(x_purpose[7:], errors="replace")
    return Auditor(clients, principal_of(request), f"{request.method} {route}", x_purpose)


AuditDep = Annotated[Auditor, Depends(_auditor)]
