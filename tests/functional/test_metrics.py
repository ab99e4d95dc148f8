"""GET /metrics on the real app with in-memory stores: its own token, the Prometheus text
format, and the counters moving with the traffic."""

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from gate.http_auth import BearerAuth, DeviceAuth
from infra.metrics import REGISTRY, timed_gate
from infra.secrets import METRICS_TOKEN_FILE, metrics_token
from infra.settings import Settings
from tests.fakes import MemoryCredentials


class Sent:
    async def send(self, topic: str, value: bytes, key: bytes) -> object:
        return _done()


async def _done() -> None:
    return None


class Lag:
    def __init__(self, lags: dict[str, int], dead: int, away: bool = False) -> None:
        self.lags, self.dead, self.away = lags, dead, away

    async def lag(self, logical_topic: str = "scans", group: str | None = None) -> int:
        if self.away:
            raise ConnectionError("Kafka is away")
        return self.lags.get(logical_topic if group is None else f"{group}/{logical_topic}", 0)

    async def produced(self, logical_topic: str) -> int:
        assert logical_topic == "dead-letters"
        return self.dead


class Index:
    async def processed(self) -> int:
        return 4242


def platform(tmp_path: Path, lag: Lag) -> tuple[FastAPI, MemoryCredentials]:
    settings = Settings(data_dir=tmp_path, topic_prefix="t-")
    app = create_app(settings)
    credentials = MemoryCredentials()
    app.state.clients = SimpleNamespace(
        settings=settings, producer=Sent(), credentials=credentials, lag=lag, index=Index()
    )
    app.state.metrics_token = metrics_token(settings)  # what the lifespan does
    return app, credentials


def client(app: FastAPI, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", auth=auth)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scan(i: int) -> dict[str, object]:
    return {
        "scan_id": f"m{i}",
        "person_id": "001090123456",
        "checkpoint_id": "cp1",
        "ts": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "source": "gate",
    }


async def test_metrics_refuse_without_their_own_token(tmp_path: Path) -> None:
    app, credentials = platform(tmp_path, Lag({}, 0))
    admin = BearerAuth(credentials.add_token("admin"))
    async with client(app) as c:
        bare = await c.get("/metrics")
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        basic = await c.get("/metrics", headers={"Authorization": "Basic eDp5"})
    async with client(app, admin) as c:
        person = await c.get("/metrics")  # an admin's token is not the metrics token
    for r in (bare, wrong, basic, person):
        assert r.status_code == 401, r.text
        assert "metrics token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "dancu_" not in r.text


async def test_the_token_file_is_made_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    token = metrics_token(settings)
    path = tmp_path / METRICS_TOKEN_FILE
    assert path.read_text() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert metrics_token(settings) == token  # a second process reads the same one
    configured = Settings(data_dir=tmp_path, metrics_token="m" * 20)
    assert metrics_token(configured) == "m" * 20


def test_a_short_configured_token_is_refused() -> None:
    with pytest.raises(ValueError, match="DANCU_METRICS_TOKEN"):
        Settings(metrics_token="short")


async def test_metrics_in_prometheus_text_with_the_counters(tmp_path: Path) -> None:
    app, credentials = platform(
        tmp_path, Lag({"scans": 17, "f0-reports": 2, "dancu-sink/store-rows": 3}, dead=5)
    )
    device = DeviceAuth(*credentials.add_device("cp1"))
    scrape = BearerAuth((tmp_path / METRICS_TOKEN_FILE).read_text())
    async with client(app, scrape) as c:
        before = samples((await c.get("/metrics")).text)
    async with client(app, device) as c:
        r = await c.post("/v1/scans", json={"scans": [scan(1), scan(2), scan(3)]})
        assert r.status_code == 202
    async with client(app, scrape) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = samples(r.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("dancu_scans_accepted_total") == 3
    assert grew("dancu_http_requests_total", method="POST", route="/v1/scans", status="202") == 1
    assert grew("dancu_http_request_duration_seconds_count", method="POST", route="/v1/scans") == 1
    assert grew("dancu_http_requests_total", method="GET", route="/metrics", status="200") == 1

    def lag(topic: str, group: str) -> float:
        return after[("dancu_consumer_lag", (("group", group), ("topic", topic)))]

    assert lag("scans", "worker") == 17
    assert lag("f0-reports", "worker") == 2
    assert lag("store-rows", "sink") == 3
    assert lag("exposures", "sink") == 0
    assert after[("dancu_dead_letters_total", ())] == 5
    assert after[("dancu_scans_processed_total", ())] == 4242
    assert after[("dancu_metrics_source_up", (("source", "kafka"),))] == 1
    for channel in ("sse", "webhook"):
        assert ("dancu_alerts_sent_total", (("channel", channel),)) in after
    assert ("dancu_gate_decision_seconds_bucket", (("decision", "allow"), ("le", "0.001"))) in after
    assert any(name == "process_cpu_seconds_total" for name, _ in after)


async def test_a_store_away_leaves_its_figures_out_not_the_scrape(tmp_path: Path) -> None:
    app, _ = platform(tmp_path, Lag({"scans": 1}, dead=0, away=True))
    async with client(app, BearerAuth(metrics_token(Settings(data_dir=tmp_path)))) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    got = samples(r.text)
    assert got[("dancu_metrics_source_up", (("source", "kafka"),))] == 0
    assert got[("dancu_metrics_source_up", (("source", "redis"),))] == 1
    assert not any(name == "dancu_consumer_lag" for name, _ in got)


async def test_gate_decisions_are_timed_by_decision() -> None:
    @timed_gate
    async def decide(decision: str) -> SimpleNamespace:
        return SimpleNamespace(decision=decision)

    def count(decision: str) -> float:
        labels = {"decision": decision}
        return REGISTRY.get_sample_value("dancu_gate_decision_seconds_count", labels) or 0.0

    allow, deny = count("allow"), count("deny")
    await decide("allow")
    await decide("deny")
    await decide("deny")
    assert (count("allow"), count("deny")) == (allow + 1, deny + 2)
