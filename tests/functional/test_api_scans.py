from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import orjson
import pytest

from api.app import create_app
from gate.http_auth import DeviceAuth
from infra.settings import Settings
from tests.fakes import MemoryCredentials


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
    credentials = MemoryCredentials()
    app.state.clients = SimpleNamespace(
        settings=settings, producer=producer, credentials=credentials
    )
    device = DeviceAuth(*credentials.add_device("cp1", "cp2", "cp3"))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", auth=device
    )
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


@pytest.mark.parametrize(
    ("over", "field", "fragment"),
    [
        ({"ts": "9999-12-31T23:59:59+00:00"}, "ts", "year 9999"),
        ({"ts": "0001-01-01T00:00:00+00:00"}, "ts", "year 1"),
        ({"ts": 1630465200}, "ts", "ISO 8601"),
        ({"ts": "2021-09-01"}, "ts", "timezone"),
        ({"ts": (datetime.now(UTC) - timedelta(days=30)).isoformat()}, "ts", "retention"),
        ({"person_id": "٠٠١٠٩٠١٢٣٤٥٦"}, "person_id", "12 digits"),  # Arabic-Indic digits
        ({"person_id": "００１０９０１２３４５６"}, "person_id", "12 digits"),  # full-width
        ({"person_id": "001090123456\n"}, "person_id", "12 digits"),
        ({"person_id": 1090123456}, "person_id", "string"),
    ],
)
async def test_hostile_values_are_refused_by_name_and_the_good_scan_kept(
    api: tuple, over: dict[str, object], field: str, fragment: str
) -> None:
    client, producer = api
    r = await client.post("/v1/scans", json=[scan(1), scan(2, **over)])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"][0]["index"] == 1
    error = " ".join(body["rejected"][0]["errors"])
    assert error.startswith(field) and fragment in error, error
    assert len(producer.sent) == 1


async def test_a_huge_scan_id_is_never_echoed_back(api: tuple) -> None:
    client, _ = api
    r = await client.post("/v1/scans", json=[scan(1, scan_id="x" * 1_000_000)])
    assert r.status_code == 422
    assert len(r.content) < 2_000


async def test_bodies_over_the_route_limit_are_413_before_being_read(api: tuple) -> None:
    client, producer = api
    big = orjson.dumps([scan(1, scan_id="y" * (5 << 20))])
    r = await client.post("/v1/scans", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "4 MiB" in r.json()["error"]

    async def chunks():  # no Content-Length: refused while streaming
        for _ in range(10):
            yield b"z" * (1 << 20)

    r = await client.post("/v1/scans", content=chunks())
    assert r.status_code == 413
    r = await client.post("/v1/gate/check", content=b"{" + b" " * (100 << 10) + b"}")
    assert r.status_code == 413 and "64 KiB" in r.json()["error"]
    assert producer.sent == []
