"""The request-ID and access-log middleware (api.observe.RequestLog) on a small app."""

import io
import logging
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi import answer
from api.observe import RequestLog
from infra.credentials import Principal
from infra.logs import JsonFormatter
from infra.metrics import REGISTRY

CCCD = "001090123456"
TOKEN = "dcu_c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1sZWFr"


class SignedIn:
    """Stands in for api.access.Access: a principal in the scope's state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/residents"):
            scope.setdefault("state", {})["principal"] = Principal("nga", "official", "HK")
        if scope["type"] == "http" and scope["path"].startswith("/early/"):
            await answer(send, 403, b'{"error": "refused before routing"}')
            return
        await self.app(scope, receive, send)


def make_app() -> FastAPI:
    app = FastAPI()
    inner = logging.getLogger("dancu.inner")

    @app.get("/residents/{person_id}/status")
    async def status(person_id: str) -> dict[str, str]:
        inner.info("looking up a resident")
        return {"ok": "yes"}

    @app.get("/early/{item}")
    async def early(item: str) -> None:  # answered by SignedIn, as Access refuses
        raise AssertionError("not reached")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(SignedIn)
    app.add_middleware(RequestLog)
    return app


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict]]]:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [orjson.loads(x) for x in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def served(method: str, route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "dancu_http_requests_total", {"method": method, "route": route, "status": str(status)}
    )
    return value or 0.0


async def test_a_new_request_id_on_every_answer() -> None:
    async with client(make_app()) as c:
        a = (await c.get("/residents/x/status")).headers["x-request-id"]
        b = (await c.get("/residents/x/status")).headers["x-request-id"]
    assert a != b and len(a) == 32 and all(ch in "0123456789abcdef" for ch in a)


@pytest.mark.parametrize("sent", ["req-1", "A.b_C-9", "x" * 64])
async def test_a_sane_incoming_request_id_is_kept(sent: str) -> None:
    async with client(make_app()) as c:
        r = await c.get("/residents/x/status", headers={"X-Request-Id": sent})
    assert r.headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["x" * 65, "has space", "semi;colon", "ünï".encode(), ""])
async def test_an_insane_incoming_request_id_is_replaced(sent: str | bytes) -> None:
    async with client(make_app()) as c:
        r = await c.get("/residents/x/status", headers={"X-Request-Id": sent})
    got = r.headers["x-request-id"]
    assert got != sent and len(got) == 32 and got.isalnum()


async def test_every_line_of_the_request_carries_its_id_and_the_access_line_no_secret(
    lines: Callable[[], list[dict]],
) -> None:
    async with client(make_app()) as c:
        r = await c.get(
            f"/residents/{CCCD}/status?name=Nguyen",
            headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "req-7"},
        )
    assert r.status_code == 200
    written = [x for x in lines() if not x["logger"].startswith("httpx")]  # the client's
    inner = [x for x in written if x["logger"] == "dancu.inner"]
    access = [x for x in written if x["logger"] == "dancu.access"]
    assert inner[0]["request_id"] == "req-7"
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "req-7" and line["method"] == "GET"
    assert line["route"] == "/residents/{person_id}/status" and line["status"] == 200
    assert line["principal"] == "nga" and line["role"] == "official"
    assert isinstance(line["duration_ms"], float)
    text = orjson.dumps(written).decode()
    for secret in (CCCD, TOKEN, "Nguyen", "Bearer"):
        assert secret not in text


async def test_requests_are_counted_by_route_template_and_status() -> None:
    route = "/residents/{person_id}/status"
    before = served("GET", route, 200), served("GET", "<unmatched>", 404)
    async with client(make_app()) as c:
        await c.get(f"/residents/{CCCD}/status")
        await c.get("/residents/other/status")
        await c.get(f"/nowhere/{CCCD}")
    assert served("GET", route, 200) == before[0] + 2
    assert served("GET", "<unmatched>", 404) == before[1] + 1


async def test_a_request_answered_before_routing_is_counted_by_its_template() -> None:
    before = served("GET", "/early/{item}", 403)
    async with client(make_app()) as c:
        r = await c.get(f"/early/{CCCD}")
    assert r.status_code == 403 and r.headers["x-request-id"]
    assert served("GET", "/early/{item}", 403) == before + 1


async def test_an_unhandled_error_is_logged_and_counted_as_500(
    lines: Callable[[], list[dict]],
) -> None:
    before = served("GET", "/boom", 500)
    async with client(make_app()) as c:
        r = await c.get("/boom", headers={"X-Request-Id": "req-boom"})
    assert r.status_code == 500
    access = [x for x in lines() if x["logger"] == "dancu.access"]
    assert access[0]["status"] == 500 and access[0]["level"] == "ERROR"
    assert access[0]["request_id"] == "req-boom" and "RuntimeError: a bug" in access[0]["exc"]
    assert served("GET", "/boom", 500) == before + 1


async def test_no_access_line_below_the_configured_level(
    lines: Callable[[], list[dict]],
) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    async with client(make_app()) as c:
        await c.get("/residents/x/status")
    assert [x for x in lines() if x["logger"] == "dancu.access"] == []
