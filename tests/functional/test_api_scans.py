from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import orjson
import pytest

from api.app import create_app
from infra.settings import Settings


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> object:
        self.sent.append((topic, value, key))
        fut: object = _done()
        return fut


async def _done_coro() -> None:
    return None


def _done() -> object:
    return _done_coro()


@pytest.fixture
def api() -> tuple[httpx.AsyncClient, FakeProducer]:
    settings = Settings(topic_prefix="t-")
    app = create_app(settings)
    producer = FakeProducer()
    app.state.clients = SimpleNamespace(settings=settings, producer=producer)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, producer


def scan(i: int, cp: str = "cp1", **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "scan_id": f"s{i}",
        "person_id": "001090123456",
        "checkpoint_id": cp,
        "ts": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "source": "gate",
    }
    body.update(over)
    return body


async def test_one_scan_is_produced_as_one_record(api: tuple) -> None:
    client, producer = api
    r = await client.post("/v1/scans", json=scan(1))
    assert r.status_code == 202 and r.json() == {"accepted": 1, "rejected": []}
    topic, value, key = producer.sent[0]
    assert topic == "t-scans" and key == b"cp1" and orjson.loads(value)["scan_id"] == "s1"


async def test_batch_is_grouped_per_checkpoint(api: tuple) -> None:
    client, producer = api
    body = {"scans": [scan(1), scan(2), scan(3, cp="cp2")]}
    r = await client.post("/v1/scans", json=body)
    assert r.json()["accepted"] == 3
    assert sorted(
        len(orjson.loads(v)) if v.startswith(b"[") else 1 for _, v, _ in producer.sent
    ) == [1, 2]


async def test_partly_bad_batch_keeps_the_good_and_names_the_bad(api: tuple) -> None:
    client, _producer = api
    r = await client.post(
        "/v1/scans", json=[scan(1), scan(2, person_id="123"), scan(3, source="drone")]
    )
    body = r.json()
    assert r.status_code == 202 and body["accepted"] == 1
    assert [x["index"] for x in body["rejected"]] == [1, 2]
    assert "12 digits" in body["rejected"][0]["errors"][0]
    assert "source" in body["rejected"][1]["errors"][0]


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"{oops", 422, "not valid JSON"),
        (b"42", 422, "body must be"),
        (b"[]", 422, "no scans"),
        (orjson.dumps([scan(1, ts="2099-01-01T00:00:00+07:00")]), 422, "no valid scan"),
    ],
)
async def test_bad_bodies_are_422_with_a_clear_error(
    api: tuple, payload: bytes, status: int, fragment: str
) -> None:
    client, producer = api
    r = await client.post(
        "/v1/scans", content=payload, headers={"content-type": "application/json"}
    )
    assert r.status_code == status and fragment in r.json()["error"]
    assert producer.sent == []
