"""Access by role: every route but the public ones needs a credential, and each route
names the roles that may use it (:data:`POLICY`; a route missing from it is refused to
everyone, so a new route is closed until someone decides who may use it).

People send ``Authorization: Bearer <token>`` (``dancu users add``); checkpoint devices
sign each request (``X-Device-Id``, ``X-Timestamp``, ``X-Signature``: HMAC-SHA256 with the
device's key over method, path with query, timestamp and the body's hash, and the
optional ``X-Nonce``; ``dancu devices add``), and a signature is accepted once. The
middleware puts the caller, a :class:`~infra.credentials.Principal`, in
``request.state.principal``; routes then scope what they return (an official's
district, a device's checkpoints, an owner's organisation) with :func:`check_district`
and :func:`check_checkpoint`.

Devices keep scanning while Redis is away: a device looked up in the last
:data:`DEVICE_GRACE_S` is still known, and signatures are also remembered in this
process, so replays stay refused. With Redis up, every request asks Redis (a revoked
device is refused at once).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi import answer, read_body
from api.errors import ApiError
from infra.auth import MAX_SKEW_S, verify
from infra.credentials import Credentials, Principal
from infra.faults import is_transient

PEOPLE = frozenset({"official", "epidemiologist", "steward", "owner", "admin"})
DEVICE = frozenset({"device"})
OFFICIAL = frozenset({"official"})
AGGREGATES = frozenset({"official", "epidemiologist", "admin"})
STEWARD = frozenset({"steward"})
ADMIN = frozenset({"admin"})

# Paths anyone may reach: liveness, the dashboard's shell (it holds no data and asks for a
# token), the API docs; ``/metrics`` checks its own token.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/metrics", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
PUBLIC_PREFIXES = ("/static/",)
# Routes a caller with no credential may use because the request carries its own proof: a
# resident's phone sends the signed text of a checkpoint's poster (registry/posters.py)
# and phones hold no dancu credential. The route checks that signature and brakes each
# client address; a caller that does send a credential (a kiosk device) is authenticated
# as usual, and any valid one is accepted.
SELF_SIGNED = frozenset({("POST", "/v1/checkins")})

# (method, route path as declared) → roles allowed. Scoping inside the roles (district,
# checkpoint, organisation) is each route's own check.
POLICY: dict[tuple[str, str], frozenset[str]] = {
    # devices at the door
    ("POST", "/v1/scans"): DEVICE,
    ("POST", "/v1/gate/check"): DEVICE,
    ("POST", "/v1/declarations/health"): DEVICE | OFFICIAL,
    ("POST", "/v1/declarations/travel"): DEVICE | OFFICIAL,
    # counts only
    ("GET", "/v1/stats/live"): PEOPLE - {"owner"},
    ("GET", "/v1/me"): PEOPLE,
    # checkpoints: owners register and edit their own
    ("POST", "/v1/checkpoints"): frozenset({"owner", "steward", "admin"}),
    ("PUT", "/v1/checkpoints/{checkpoint_id}"): frozenset({"owner", "steward", "admin"}),
    # its printable poster (a signed QR code for residents' phones: POST /v1/checkins)
    ("GET", "/v1/checkpoints/{checkpoint_id}/poster.png"): STEWARD | {"owner", "admin"},
    ("GET", "/v1/checkpoints/{checkpoint_id}/poster.svg"): STEWARD | {"owner", "admin"},
    # data stewards: imports and the review queue (an owner uploads its staff list)
    ("POST", "/v1/imports/{kind}"): STEWARD | {"owner"},
    ("GET", "/v1/imports"): STEWARD,
    ("GET", "/v1/imports/{import_id}"): STEWARD,
    ("GET", "/v1/imports/{import_id}/records"): STEWARD,
    ("GET", "/v1/review"): STEWARD,
    ("POST", "/v1/review/{review_id}"): STEWARD,
    ("GET", "/v1/quality"): STEWARD | {"epidemiologist", "admin"},
    # named people: officials of their district
    ("GET", "/v1/residents/{person_id}/status"): OFFICIAL,
    ("POST", "/v1/reports/f0"): OFFICIAL,
    ("PUT", "/v1/reports/f0/{report_id}"): OFFICIAL,
    ("DELETE", "/v1/reports/f0/{report_id}"): OFFICIAL,
    ("POST", "/v1/reports/f0/{report_id}/approve"): OFFICIAL,
    ("GET", "/v1/reports/f0/{report_id}"): OFFICIAL,
    ("GET", "/v1/exposures"): OFFICIAL,
    ("GET", "/v1/residents/{person_id}/why"): OFFICIAL,
    ("GET", "/v1/contacts/{person_id}"): OFFICIAL,
    # pseudonymous tracing views
    ("GET", "/v1/clusters"): AGGREGATES,
    ("GET", "/v1/clusters/{cluster_id}/graph"): AGGREGATES,
    ("GET", "/v1/hotspots"): AGGREGATES,
    ("GET", "/v1/tracing/summary"): AGGREGATES,
    # the dashboard's analytics (ClickHouse aggregates, nobody named) and epidemic levels
    ("GET", "/v1/analytics/scans"): AGGREGATES,
    ("GET", "/v1/analytics/cases"): AGGREGATES,
    ("GET", "/v1/analytics/vaccination"): AGGREGATES,
    ("GET", "/v1/analytics/colours"): AGGREGATES,
    ("GET", "/v1/analytics/checkpoints/top"): AGGREGATES,
    ("GET", "/v1/levels"): AGGREGATES,
    # alerts: officials get their district's (named people), owners their organisation's
    # (venue counts, never names); only officials act on them
    ("GET", "/v1/alerts/stream"): OFFICIAL | {"owner"},
    ("GET", "/v1/alerts"): OFFICIAL | {"owner"},
    ("GET", "/v1/alerts/{alert_id}"): OFFICIAL | {"owner"},
    ("POST", "/v1/alerts/{alert_id}/ack"): OFFICIAL,
    ("POST", "/v1/alerts/{alert_id}/followup"): OFFICIAL,
    ("POST", "/v1/webhooks"): OFFICIAL | {"owner"},
    ("GET", "/v1/webhooks"): OFFICIAL | {"owner"},
    ("DELETE", "/v1/webhooks/{webhook_id}"): OFFICIAL | {"owner"},
    # residents flagged for testing by their declarations
    ("GET", "/v1/testing/flagged"): OFFICIAL,
    ("GET", "/v1/testing/summary"): AGGREGATES,
    # businesses and organisations: their own checkpoints and staff
    ("GET", "/v1/owner/checkpoints"): frozenset({"owner"}),
    ("GET", "/v1/organisations/staff"): frozenset({"owner"}),
    # administration
    ("POST", "/v1/admin/rebuild"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
    ("POST", "/v1/users"): ADMIN,
    ("DELETE", "/v1/users/{name}"): ADMIN,
    ("POST", "/v1/devices"): ADMIN,
    ("DELETE", "/v1/devices/{device_id}"): ADMIN,
}

CREDENTIALS_HELP = (
    "credentials required: 'Authorization: Bearer <token>' for people (dancu users add), "
    "or X-Device-Id, X-Timestamp and X-Signature for checkpoint devices (dancu devices add)"
)


DEVICE_GRACE_S = 600.0  # how long a device stays known here while Redis is away
SEEN_MAX = 200_000  # signatures remembered in this process (a few minutes of traffic)


class Forbidden(ApiError):
    status_code = 403


class Hidden(ApiError):
    """A person outside the caller's district answers exactly as one not registered, so
    the refusal does not tell where someone lives."""

    status_code = 404


class Routes:
    """(method, path) → the declared route path, over the app's OpenAPI paths and
    :data:`POLICY` (a path parameter matches one segment; literal segments win)."""

    def __init__(self, templates: set[tuple[str, str]]) -> None:
        def pattern(path: str) -> re.Pattern[str]:
            parts = re.split(r"(\{[^}]+\})", path)
            return re.compile(
                "".join(
                    ("[^/]+" if not p.endswith(":path}") else ".*")
                    if p.startswith("{")
                    else re.escape(p)
                    for p in parts
                )
            )

        ordered = sorted(templates, key=lambda t: (t[1].count("{"), -len(t[1])))
        self.table = [(m, pattern(p), p) for m, p in ordered]

    @classmethod
    def of(cls, app: Any) -> Routes:
        found: set[tuple[str, str]] = set(POLICY)
        for path, operations in (app.openapi().get("paths") or {}).items():
            found.update((m.upper(), path) for m in operations)
        return cls(found)

    def find(self, method: str, path: str) -> str | None:
        for m, pattern, template in self.table:
            if m == method and pattern.fullmatch(path):
                return template
        return None


def _refusal(status: int, message: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="dancu"'))
    return status, orjson.dumps({"error": message}), headers


class Access:
    """ASGI middleware: authenticate, then check the route's roles (401, 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes: Routes | None = None  # built on the first request (routes are known)
        self.devices: dict[str, tuple[tuple[frozenset[str], str], float]] = {}
        self.seen: OrderedDict[str, float] = OrderedDict()  # signature → when it may go

    async def _device(
        self, credentials: Credentials, device_id: str
    ) -> tuple[frozenset[str], str] | None:
        """The device from Redis; while Redis is away, as last seen (for a while)."""
        try:
            found = await credentials.device(device_id)
        except Exception as exc:
            known = self.devices.get(device_id)
            if not is_transient(exc) or known is None:
                raise
            if time.monotonic() - known[1] > DEVICE_GRACE_S:
                raise
            return known[0]
        if found is None:  # unknown IDs are not remembered (a spray cannot evict real ones)
            self.devices.pop(device_id, None)
            return None
        if len(self.devices) >= 100_000:
            oldest = min(self.devices, key=lambda d: self.devices[d][1])
            del self.devices[oldest]
        self.devices[device_id] = (found, time.monotonic())
        return found

    async def _first_use(self, credentials: Credentials, signature: str) -> bool:
        """A signature not seen before, here or (when it answers) in Redis."""
        now = time.monotonic()
        while self.seen and (next(iter(self.seen.values())) < now or len(self.seen) > SEEN_MAX):
            self.seen.popitem(last=False)
        if signature in self.seen:
            return False
        self.seen[signature] = now + 2 * MAX_SKEW_S
        try:
            return await credentials.first_use(signature)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return True  # Redis away: this process's memory is the replay check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in PUBLIC_PATHS
            or path.startswith(PUBLIC_PREFIXES)
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        if self.routes is None:
            self.routes = Routes.of(scope["app"])
        method = "GET" if scope["method"] == "HEAD" else scope["method"]  # HEAD runs GET
        route = self.routes.find(method, path)
        if route is None:  # no such route (404) or method (405): the app says which
            await self.app(scope, receive, send)
            return
        allowed = POLICY.get((method, route), frozenset())
        if (method, route) in SELF_SIGNED:
            if not _has_credential(scope):
                await self.app(scope, receive, send)  # the route checks the body's proof
                return
            allowed = PEOPLE | DEVICE
        try:
            principal, receive = await self._authenticate(scope, receive, allowed)
        except _Refused as refused:
            await answer(send, *_refusal(refused.status, refused.message))
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            await answer(send, 503, b'{"error": "the credential store is unavailable, retry"}')
            return
        if principal.role not in allowed:
            who = "no role" if not allowed else "only " + ", ".join(sorted(allowed))
            await answer(
                send,
                *_refusal(
                    403,
                    f"role {principal.role!r} may not use {method} {route} ({who})",
                ),
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(
        self, scope: Scope, receive: Receive, allowed: frozenset[str]
    ) -> tuple[Principal, Receive]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        credentials: Credentials = scope["app"].state.clients.credentials
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _Refused(401, "Authorization: expected 'Bearer <token>'")
            person = await credentials.person(token.strip())
            if person is None:
                raise _Refused(401, "the token is unknown, expired or revoked")
            return person, receive
        device_id = headers.get("x-device-id")
        if not device_id:
            raise _Refused(401, CREDENTIALS_HELP)
        if "device" not in allowed:  # refused before its body is read (device IDs are not secret)
            raise _Refused(403, f"devices may not use {scope['method']} {scope['path'][:100]}")
        signature = headers.get("x-signature") or ""
        if len(signature) != 64 or any(c not in "0123456789abcdefABCDEF" for c in signature):
            raise _Refused(401, "X-Signature: 64 hexadecimal digits (HMAC-SHA256)")
        device = await self._device(credentials, device_id)
        if device is None:
            raise _Refused(401, f"X-Device-Id: no device {device_id[:40]!r} in service")
        checkpoints, key = device
        body = await read_body(receive)  # bounded by the route's limit (BodyLimit, outside)
        # The path as sent (percent-encoded), as the device signed it.
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        target = path + (
            "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
        )
        verdict = verify(
            key,
            scope["method"],
            target,
            headers.get("x-timestamp"),
            body,
            headers.get("x-signature"),
            time.time(),
            headers.get("x-nonce"),
        )
        if not verdict.ok:
            raise _Refused(401, verdict.reason)
        if not await self._first_use(credentials, headers["x-signature"].lower()):
            raise _Refused(401, "X-Signature: this request was already received (a replay)")
        return (
            Principal(device_id, "device", checkpoints=checkpoints),
            _replay(body),
        )


def _has_credential(scope: Scope) -> bool:
    return any(k in (b"authorization", b"x-device-id") for k, _ in scope["headers"])


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def principal_of(scope_or_request: Any) -> Principal:
    """The authenticated caller (a route behind :class:`Access` always has one)."""
    state = scope_or_request.get("state", {}) if isinstance(scope_or_request, dict) else None
    if state is None:
        state = scope_or_request.scope.get("state", {})
    found = state.get("principal")
    if found is None:  # only reachable if the middleware is not installed
        raise Forbidden("no credentials on this request")
    p: Principal = found
    return p


def _principal(request: Request) -> Principal:
    return principal_of(request)


PrincipalDep = Annotated[Principal, Depends(_principal)]


def check_checkpoint(p: Principal, checkpoint_ids: Any) -> None:
    """A device acts only for its own checkpoints (403 naming the others)."""
    if p.role != "device":
        return
    others = sorted({str(c) for c in checkpoint_ids} - set(p.checkpoints))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise Forbidden(f"device {p.name} may not act for checkpoint {shown}")


def check_district(p: Principal, district: str | None, what: str = "this resident") -> None:
    """An official acts for the people of their own district only (403)."""
    if p.role == "official" and (district or "") != p.district:
        raise Forbidden(f"{what} is outside district {p.district!r}")


def check_resident(p: Principal, person_id: str, fields: dict[str, str] | None) -> dict[str, str]:
    """The resident's record, for an official only within their own district: anyone
    else answers exactly as an ID not in the registry (404), so the answer does not say
    whether or where someone lives."""
    outside = p.role == "official" and fields is not None and fields.get("district") != p.district
    if fields is None or outside:
        where = f" of district {p.district}" if p.role == "official" else ""
        raise Hidden(f"ID {person_id} is not in the registry{where}")
    return fields
