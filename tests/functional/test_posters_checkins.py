"""Posters and self check-in through the app with in-memory stores: who may print a
poster, what the poster holds, and a check-in from a phone with no credential becoming a
``source: "self"`` scan, while forged posters, unknown checkpoints and floods are refused."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import orjson
import pytest
import zxingcpp
from PIL import Image

from api.app import create_app
from gate.http_auth import BearerAuth, DeviceAuth
from infra.settings import Settings
from registry.posters import make_poster_payload
from tests.fakes import MemoryCredentials
from tests.functional.test_api_scans import FakeProducer
from tracing.events import VN_TZ

P1 = "001090000301"
ORG = "Công ty Thử"
CARD = f"{P1}||Nguyễn Văn An|01011990|Nam|Số 1 Kim Mã, Ba Đình, Hà Nội|01012021"


class FakeCheckpoints:
    def __init__(self, rows: dict[str, dict[str, str]]) -> None:
        self.rows = rows

    async def lookup(self, ids: list[str]) -> dict[str, dict[str, str]]:
        return {i: self.rows.get(i, {}) for i in ids}


class World:
    def __init__(self, tmp: Path, burst: int = 60, rate: float = 5.0) -> None:
        self.settings = Settings(
            topic_prefix="t-",
            data_dir=tmp,
            poster_key="p" * 32,
            checkin_burst=burst,
            checkin_rate=rate,
        )
        self.app = create_app(self.settings)
        self.producer = FakeProducer()
        self.credentials = MemoryCredentials()
        checkpoints = FakeCheckpoints(
            {
                "cp1": {
                    "checkpoint_id": "cp1",
                    "name": "Cửa hàng Bà Năm",
                    "district": "Ba Đình",
                    "ward": "Phường Kim Mã",
                    "owner": ORG,
                },
                "cp2": {"checkpoint_id": "cp2", "district": "Hoàn Kiếm", "owner": "Khác"},
            }
        )
        self.app.state.clients = SimpleNamespace(
            settings=self.settings,
            producer=self.producer,
            credentials=self.credentials,
            checkpoints=checkpoints,
        )

    def client(self, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t", auth=auth
        )

    def bearer(self, role: str, org: str = "") -> BearerAuth:
        return BearerAuth(self.credentials.add_token(role, organisation=org))

    def poster(self, checkpoint_id: str = "cp1") -> str:
        return make_poster_payload(b"p" * 32, checkpoint_id, datetime.now(VN_TZ).date())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_an_owner_prints_its_own_checkpoints_poster_which_decodes(world: World) -> None:
    async with world.client(world.bearer("owner", ORG)) as c:
        png = await c.get("/v1/checkpoints/cp1/poster.png")
        svg = await c.get("/v1/checkpoints/cp1/poster.svg")
        other = await c.get("/v1/checkpoints/cp2/poster.png")
        unknown = await c.get("/v1/checkpoints/nope/poster.svg")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = np.array(Image.open(io.BytesIO(png.content)).convert("L"))
    (code,) = zxingcpp.read_barcodes(image)
    assert code.text == world.poster("cp1")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.content)  # well-formed, the name escaped
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Cửa hàng Bà Năm" in texts and "Quét mã để khai báo vào/ra" in texts
    assert any("Phường Kim Mã, Ba Đình" in (t or "") for t in texts)
    assert "Mã điểm: cp1" in texts
    assert other.status_code == 403 and "organisation" in other.json()["error"]
    assert unknown.status_code == 404 and "not registered" in unknown.json()["error"]


async def test_who_may_print_a_poster(world: World) -> None:
    for role, status in (("steward", 200), ("admin", 200), ("official", 403)):
        async with world.client(world.bearer(role)) as c:
            r = await c.get("/v1/checkpoints/cp2/poster.svg")
        assert r.status_code == status, (role, r.text)
    async with world.client() as c:
        assert (await c.get("/v1/checkpoints/cp2/poster.svg")).status_code == 401


async def test_a_phone_checks_in_with_no_credential(world: World) -> None:
    ts = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    async with world.client() as c:
        r = await c.post("/v1/checkins", json={"poster": world.poster(), "person_id": P1})
        once = await c.post("/v1/checkins", json={"poster": world.poster(), "qr": CARD, "ts": ts})
        again = await c.post(
            "/v1/checkins", json={"poster": world.poster(), "person_id": P1, "ts": ts}
        )
    assert r.status_code == 202, r.text
    assert r.json()["checkpoint_id"] == "cp1"
    topic, value, key = world.producer.sent[0]
    scan = orjson.loads(value)
    assert topic == "t-scans" and key == b"cp1"
    assert scan["source"] == "self" and scan["person_id"] == P1
    assert scan["scan_id"] == r.json()["scan_id"]
    # the card's QR names the same person: in the same minute, the same scan (a resend)
    assert once.status_code == 202 and orjson.loads(world.producer.sent[1][1])["person_id"] == P1
    assert again.status_code == 202 and again.json()["scan_id"] == once.json()["scan_id"]
    assert once.json()["scan_id"] != r.json()["scan_id"]  # another minute, another visit


async def test_a_checkin_id_makes_a_resend_the_same_scan(world: World) -> None:
    ts = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    body = {"poster": world.poster(), "person_id": P1, "ts": ts, "checkin_id": "phone-1-42"}
    async with world.client() as c:
        first = await c.post("/v1/checkins", json=body)
        resend = await c.post("/v1/checkins", json=body)
        other = await c.post("/v1/checkins", json={**body, "checkin_id": "phone-1-43"})
    assert first.json()["scan_id"] == resend.json()["scan_id"] != other.json()["scan_id"]


async def test_forged_posters_and_bad_bodies_are_refused(world: World) -> None:
    genuine = world.poster("cp1")
    forged = genuine.replace("|cp1|", "|cp2|")
    other_key = make_poster_payload(b"q" * 32, "cp1", datetime.now(VN_TZ).date())
    unregistered = world.poster("cp9")
    cases = [
        ({"poster": forged, "person_id": P1}, 403, "forged, altered"),
        ({"poster": other_key, "person_id": P1}, 403, "signature"),
        ({"poster": "DANCU7|CP|cp1|20260101|X", "person_id": P1}, 422, "version"),
        ({"poster": "hello", "person_id": P1}, 422, "not a dancu poster"),
        ({"poster": unregistered, "person_id": P1}, 404, "not registered"),
        ({"poster": genuine, "person_id": "001090"}, 422, "person_id"),
        ({"poster": genuine, "qr": "not a card"}, 422, "qr"),
        ({"poster": genuine}, 422, "person_id or the card's qr"),
        ({"poster": genuine, "person_id": P1, "qr": CARD}, 422, "one of them"),
        ({"poster": genuine, "person_id": P1, "ts": "2000-01-01T00:00:00Z"}, 422, "ts"),
    ]
    async with world.client() as c:
        for body, status, said in cases:
            r = await c.post("/v1/checkins", json=body)
            assert r.status_code == status and said in r.json()["error"], (body, r.text)
        r = await c.post("/v1/checkins", content=b"{", headers={"content-type": "x"})
        assert r.status_code == 422
    assert world.producer.sent == []


async def test_a_kiosk_device_checks_in_for_its_own_checkpoint_only(world: World) -> None:
    kiosk = DeviceAuth(*world.credentials.add_device("cp1"))
    async with world.client(kiosk) as c:
        mine = await c.post("/v1/checkins", json={"poster": world.poster("cp1"), "person_id": P1})
        theirs = await c.post("/v1/checkins", json={"poster": world.poster("cp2"), "person_id": P1})
    assert mine.status_code == 202 and theirs.status_code == 403
    async with world.client(BearerAuth("dcu_nope")) as c:  # a bad credential is not ignored
        r = await c.post("/v1/checkins", json={"poster": world.poster(), "person_id": P1})
    assert r.status_code == 401


async def test_one_address_is_braked_with_retry_after(tmp_path: Path) -> None:
    world = World(tmp_path, burst=3, rate=0.01)  # no refill between the requests
    body = {"poster": world.poster(), "person_id": P1}
    async with world.client() as c:
        answers = [await c.post("/v1/checkins", json=body) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert "too many" in answers[-1].json()["error"]
