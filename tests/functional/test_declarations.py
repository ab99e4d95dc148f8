"""Declarations by residents through the API (httpx ASGI transport, fakes for the stores):
validated, sent as health records, symptomatic ones flagged for testing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from api.app import create_app
from gate.http_auth import DeviceAuth
from infra.settings import Settings
from registry.health import apply_record
from tests.fakes import MemoryCredentials

KNOWN = "001090123456"


class Residents:
    async def get(self, person_id: str) -> dict[str, str] | None:
        return {"id": KNOWN} if person_id == KNOWN else None


class Records:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.audit: AuditLog | None = None

    async def send(self, events: list[dict[str, object]]) -> None:
        self.sent.extend(events)


class AuditLog:
    """The audit stream (only XADD is used on the request path)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []

    async def xadd(self, stream: str, fields: dict[str, str], **_: object) -> str:
        self.entries.append(fields)
        return f"{len(self.entries)}-0"


@pytest.fixture
def api() -> tuple[httpx.AsyncClient, Records]:
    settings = Settings(topic_prefix="t-")
    app = create_app(settings)
    records = Records()
    credentials = MemoryCredentials()
    app.state.clients = SimpleNamespace(
        settings=settings,
        residents=Residents(),
        health_records=records,
        credentials=credentials,
        redis=AuditLog(),
        pseudonymize=lambda person_id: f"pk-{person_id[-4:]}",
    )
    records.audit = app.state.clients.redis
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        auth=DeviceAuth(*credentials.add_device("cp-1")),
    )
    return client, records


async def test_a_symptomatic_declaration_flags_the_resident_for_testing(api: tuple) -> None:  # type: ignore[type-arg]
    client, records = api
    body = {
        "person_id": KNOWN,
        "symptoms": ["fever", "cough"],
        "places": [{"place": "Chợ Đồng Xuân", "date": "2021-11-10"}],
    }
    r = await client.post("/v1/declarations/health", json=body)
    assert r.status_code == 202 and r.json()["needs_test"] is True
    assert records.audit is not None
    (entry,) = records.audit.entries  # a declaration names a person: audited
    assert entry["role"] == "device" and entry["route"] == "POST /v1/declarations/health"
    assert entry["people"] == f"pk-{KNOWN[-4:]}" and KNOWN not in str(entry)
    (event,) = records.sent
    assert event["kind"] == "health-declarations" and event["person_id"] == KNOWN
    record = event["record"]
    assert record["symptoms"] is True and record["places"][0]["place"] == "Chợ Đồng Xuân"  # type: ignore[index]
    changes = apply_record({}, "health-declarations", record)  # type: ignore[arg-type]
    assert changes["test_needed_since"] == record["declared_at"]  # type: ignore[index]
    quiet = await client.post("/v1/declarations/health", json={"person_id": KNOWN})
    assert quiet.status_code == 202 and quiet.json()["needs_test"] is False
    assert "test_needed_since" not in apply_record(
        {}, "health-declarations", records.sent[1]["record"]
    )  # type: ignore[arg-type]


async def test_a_travel_declaration(api: tuple) -> None:  # type: ignore[type-arg]
    client, records = api
    body = {
        "person_id": KNOWN,
        "from_province": "079",
        "departure_date": "2021-11-01",
        "arrival_date": "2021-11-02",
        "transport": "train",
    }
    r = await client.post("/v1/declarations/travel", json=body)
    assert r.status_code == 202 and r.json()["declaration_id"]
    assert records.sent[0]["record"]["from_province"] == "079"  # type: ignore[index]


@pytest.mark.parametrize(
    "path, body, named",
    [
        ("/v1/declarations/health", {"person_id": "001090999999"}, "not in the registry"),
        ("/v1/declarations/health", {"person_id": "12"}, "person_id"),
        ("/v1/declarations/health", {"person_id": KNOWN, "symptoms": "fever"}, "symptoms"),
        (
            "/v1/declarations/health",
            {
                "person_id": KNOWN,
                "declared_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            "future",
        ),
        ("/v1/declarations/health", {"person_id": KNOWN, "extra": 1}, "extra"),
        (
            "/v1/declarations/travel",
            {
                "person_id": KNOWN,
                "from_province": "099",
                "departure_date": "2021-11-01",
                "arrival_date": "2021-11-02",
            },
            "unknown province code",
        ),
        (
            "/v1/declarations/travel",
            {
                "person_id": KNOWN,
                "from_province": "079",
                "departure_date": "2021-11-03",
                "arrival_date": "2021-11-02",
            },
            "arrival_date",
        ),
    ],
)
async def test_bad_declarations_name_the_problem(
    api: tuple, path: str, body: dict, named: str
) -> None:  # type: ignore[type-arg]
    client, records = api
    r = await client.post(path, json=body)
    assert r.status_code == 422 and named in r.json()["error"], r.text
    assert records.sent == []
