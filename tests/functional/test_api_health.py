from types import SimpleNamespace

import httpx

from api.app import create_app
from infra.faults import AgentHealth
from infra.settings import Settings


class Up:
    async def ping(self) -> bool:
        return True


class Down:
    async def ping(self) -> bool:
        raise ConnectionError("Connection refused")


class ClickHouseUp:
    def ping(self) -> None:
        return None


async def health(redis: object, agents: AgentHealth | None = None) -> httpx.Response:
    app = create_app(Settings())
    app.state.clients = SimpleNamespace(
        lag=Up(), redis=redis, clickhouse=ClickHouseUp(), health=agents or AgentHealth()
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get("/healthz")


async def test_healthy_when_every_service_answers() -> None:
    r = await health(Up())
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_503_names_the_service_that_is_down() -> None:
    r = await health(Down())
    body = r.json()
    assert r.status_code == 503 and body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection refused" in body["checks"]["redis"]["error"]
    assert body["checks"]["kafka"]["ok"] and body["checks"]["clickhouse"]["ok"]


async def test_503_while_an_agent_is_retrying_a_store() -> None:
    agents = AgentHealth()
    agents.fail("ClickHouse insert", ConnectionError("connection refused"))
    r = await health(Up(), agents)
    body = r.json()
    assert r.status_code == 503 and body["checks"]["agents"]["ok"] is False
    assert "connection refused" in str(body["checks"]["agents"]["waiting_on"]["ClickHouse insert"])
    agents.ok("ClickHouse insert")
    assert (await health(Up(), agents)).status_code == 200
