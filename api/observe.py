"""Every HTTP request observed once, from outside every other middleware: a request ID
(the caller's ``X-Request-Id`` when it is sane, else a new one) echoed in the answer and
carried by every log line written during the request; an access log line; the HTTP
metrics by route template.

What is logged is chosen, not dumped: method, the route's *template* (the raw path holds
person IDs), status, duration, and who called (name and role). Never headers, query
strings or bodies, so no token, device key, signature, ID number or name.
"""

from __future__ import annotations

import logging
import os
import re
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import Routes
from infra.faults import is_transient
from infra.logs import REQUEST_ID
from infra.metrics import observe_request

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
UNMATCHED = "<unmatched>"

log = logging.getLogger("dancu.access")


def request_id(scope: Scope) -> str:
    """The caller's ID when it is 1–64 of ``[A-Za-z0-9._-]``, else a new random one (a
    longer or stranger value could forge log lines or bloat them)."""
    for name, value in scope.get("headers") or ():
        if name == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()  # as random as uuid4, a third of its cost


class RequestLog:
    """ASGI middleware; install it last (outermost) so it times and sees everything."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Routes without parameters, by (method, path): a repeated path (the gate check,
        # answered ahead of the router) costs a dict lookup, not a match over every route.
        self._static: dict[tuple[str, str], str] = {}
        self._routes: Routes | None = None  # built on first use, when the routes are known
        self._plain: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        header = (HEADER, rid.encode("ascii"))
        context = REQUEST_ID.set(rid)
        started = perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        failure: Exception | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            failure = exc
            if not status:  # answered outside, by api/errors.py's handler for Exception
                status = 503 if is_transient(exc) else 500
            raise
        except BaseException:  # cancelled: the client went away (an event stream closed)
            status = status or 499
            raise
        finally:
            seconds = perf_counter() - started
            route = self._route(scope)
            observe_request(scope["method"], route, status, seconds)
            self._log(scope, route, status, seconds, rid, failure)
            REQUEST_ID.reset(context)

    def _route(self, scope: Scope) -> str:
        """The declared template of the route that served the request: FastAPI leaves it in
        the scope; requests answered before routing (access refusals, the gate's fast path,
        the store proxy) are looked up in the access table's templates."""
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        key = (scope["method"], scope["path"])
        found = self._static.get(key)
        if found is not None:
            return found
        app = scope.get("app")
        if app is None:
            return UNMATCHED
        if self._routes is None:
            self._routes = Routes.of(app)
            # The app's own plain routes (/openapi.json, /docs) leave no route in the scope.
            self._plain = {
                path
                for route in app.router.routes
                if isinstance(path := getattr(route, "path", None), str)
            }
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        template = self._routes.find(method, scope["path"]) or (
            scope["path"] if scope["path"] in self._plain else UNMATCHED
        )
        if template == scope["path"] and len(self._static) < 1024:
            self._static[key] = template
        return template

    @staticmethod
    def _log(
        scope: Scope,
        route: str,
        status: int,
        seconds: float,
        rid: str,
        failure: Exception | None,
    ) -> None:
        level = logging.INFO if status < 500 else logging.WARNING
        if failure is not None and status == 500:
            level = logging.ERROR
        if not log.isEnabledFor(level):
            return
        extra: dict[str, object] = {
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": rid,
        }
        principal = (scope.get("state") or {}).get("principal")
        if principal is not None:
            extra["principal"] = getattr(principal, "name", "")
            extra["role"] = getattr(principal, "role", "")
        log.log(
            level,
            "%s %s %d",
            scope["method"],
            route,
            status,
            extra=extra,
            exc_info=failure if level == logging.ERROR else None,
        )
