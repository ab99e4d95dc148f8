"""What an audience is shown of its alerts, on every channel (list, SSE, webhooks).

Alerts are stored pseudonymously; an exposure alert names its person (ID and name) only
here, for the officials of the person's district, and the caller audits that read.
A venue alert never names anyone: an organisation sees its checkpoint, the time slots and
how many visitors were flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from api.access import Forbidden
from infra.alerts import Alert, AlertEvent
from infra.clients import Clients
from infra.credentials import Principal
from tracing.alerts import district_scope, organisation_scope

Person = tuple[str, str | None]  # (person ID, name)


def scope_of(p: Principal) -> str:
    """The audience a caller belongs to: an official's district, an owner's organisation."""
    if p.role == "official" and p.district:
        return district_scope(p.district)
    if p.role == "owner" and p.organisation:
        return organisation_scope(p.organisation)
    raise Forbidden("alerts go to officials (of their district) and owners (of their organisation)")


async def _people(clients: Clients, bodies: Sequence[dict[str, Any]]) -> dict[str, Person]:
    keys = sorted({str(b["person_key"]) for b in bodies if b.get("person_key")})
    ids = await clients.residents.ids_of(keys)
    records = await clients.residents.get_many([ids[k] for k in keys if k in ids])
    names = {
        ids[k]: (r or {}).get("name")
        for k, r in zip([k for k in keys if k in ids], records, strict=True)
    }
    return {k: (ids[k], names.get(ids[k])) for k in keys if k in ids}


def _body(body: dict[str, Any], people: dict[str, Person]) -> dict[str, Any]:
    if "person_key" not in body:
        return dict(body)
    out = {k: v for k, v in body.items() if k != "person_key"}
    person_id, name = people.get(str(body["person_key"]), (None, None))
    out["person_id"] = person_id
    out["name"] = name
    return out


def _named(views: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(v["person_id"]) for v in views if v.get("person_id")})


async def event_views(
    clients: Clients, events: Sequence[AlertEvent]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The views of stream entries (SSE ``data:``, webhook bodies), and the person IDs
    they name (for the audit record)."""
    people = await _people(clients, [e.body for e in events])
    views = []
    for e in events:
        alert = {"alert_id": e.alert_id, "kind": e.kind, "status": e.status}
        alert.update(_body(e.body, people))
        view: dict[str, Any] = {
            "event_id": e.event_id,
            "change": e.change,
            "at": e.at,
            "alert": alert,
        }
        if e.detail is not None:
            view["followup"] = e.detail
        views.append(view)
    return views, _named([v["alert"] for v in views])


async def alert_views(
    clients: Clients, alerts: Sequence[Alert]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The views of stored alerts (lists and single reads), and the person IDs they name."""
    people = await _people(clients, [a.body for a in alerts])
    views = []
    for a in alerts:
        view: dict[str, Any] = {
            "alert_id": a.alert_id,
            "kind": a.kind,
            "status": a.status,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
            "last_event_id": a.last_event,
        }
        view.update(_body(a.body, people))
        if a.history:
            view["history"] = a.history
        views.append(view)
    return views, _named(views)
