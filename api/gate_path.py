"""The gate's fast path: ``POST /v1/gate/check`` answered ahead of FastAPI's routing and
dependency resolution (about half of a gate answer's CPU), with the route's own model,
logic and error shape. It sits inside :class:`api.access.Access`: the device is
authenticated and its role checked before this runs. Gate devices send hundreds of these
a second; the route itself stays in the app for the OpenAPI schema."""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access import principal_of
from api.asgi import answer, read_body
from api.errors import ApiError, validation_message
from api.routes.residents import GateCheck, decide_gate
from infra.faults import is_transient

PATH = "/v1/gate/check"


class GateFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            check = GateCheck.model_validate_json(body)
            decision = await decide_gate(scope["app"].state.clients, check, principal_of(scope))
            status, payload = 200, decision.model_dump()
        except ValidationError as exc:
            status, payload = 422, validation_message(exc.errors())
        except ApiError as exc:
            status, payload = exc.status_code, {"error": exc.message}
        except Exception as exc:
            if not is_transient(exc):
                raise
            status, payload = 503, {"error": "a store is unavailable, retry shortly"}
        await answer(send, status, orjson.dumps(payload))
