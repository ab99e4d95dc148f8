"""Posters and self check-in on the real platform: an owner prints its checkpoint's
poster, a phone reads the QR code off the PNG and checks a resident in with no
credential; the visit reaches ClickHouse once, however often it is re-sent, and a
forged poster is refused."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import zxingcpp
from PIL import Image

from infra.secrets import poster_key
from registry.posters import make_poster_payload
from tests.integration.conftest import Platform
from tracing.events import VN_TZ

pytestmark = pytest.mark.integration

HOME = "Ba Đình"
P1 = "001090000301"
CARD = f"{P1}||Nguyễn Văn An|01011990|Nam|Số 1 Kim Mã, Ba Đình, Hà Nội|01012021"
ORG = "Cửa hàng Bà Năm"
CP, CP_OTHER = "chk-cp1", "chk-cp2"


def test_a_poster_scanned_by_a_phone_becomes_one_self_visit(
    platform: Platform, tmp_path: Path
) -> None:
    residents = tmp_path / "residents.csv"
    residents.write_text(
        "id,name,dob,gender,address,district,ward,household_id\n"
        f"{P1},Nguyễn Văn An,1990-01-01,Nam,Số 1 Kim Mã,{HOME},Phường Kim Mã,H1\n",
        encoding="utf-8",
    )
    loaded = platform.run_cli("import", "residents", str(residents))
    assert loaded.returncode == 0, loaded.stderr
    platform.start()
    owner = httpx.Client(base_url=platform.url, auth=platform.auth("owner", org=ORG), timeout=60)
    cps = [
        {
            "checkpoint_id": cp,
            "name": "Tạp hóa Bà Năm",
            "type": "shop",
            "district": HOME,
            "ward": "Phường Kim Mã",
        }
        for cp in (CP, CP_OTHER)
    ]
    assert owner.post("/v1/checkpoints", json=cps).status_code == 201

    svg = owner.get(f"/v1/checkpoints/{CP}/poster.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    texts = [t.text for t in ET.fromstring(svg.content).iter("{http://www.w3.org/2000/svg}text")]
    assert "Tạp hóa Bà Năm" in texts and f"Mã điểm: {CP}" in texts
    png = owner.get(f"/v1/checkpoints/{CP}/poster.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    (code,) = zxingcpp.read_barcodes(np.array(Image.open(io.BytesIO(png.content)).convert("L")))
    poster = code.text
    assert poster.startswith(f"DANCU1|CP|{CP}|")
    assert owner.get("/v1/checkpoints/chk-none/poster.png").status_code == 404
    stranger = platform.auth("owner", org="Công ty Lạ")
    r = httpx.get(f"{platform.url}/v1/checkpoints/{CP}/poster.svg", auth=stranger, timeout=30)
    assert r.status_code == 403

    phone = httpx.Client(base_url=platform.url, timeout=60)  # no credential at all
    # the signature covers the checkpoint: moved to another one, the poster is refused
    forged = poster.replace(f"|{CP}|", f"|{CP_OTHER}|")
    r = phone.post("/v1/checkins", json={"poster": forged, "person_id": P1})
    assert r.status_code == 403 and "forged" in r.json()["error"], r.text
    # genuine, but for a checkpoint nobody registered
    unregistered = make_poster_payload(
        poster_key(platform.settings), "chk-none", datetime.now(VN_TZ).date()
    )
    r = phone.post("/v1/checkins", json={"poster": unregistered, "person_id": P1})
    assert r.status_code == 404, r.text

    body = {"poster": poster, "person_id": P1, "checkin_id": "phone-7-1"}
    first = phone.post("/v1/checkins", json=body)
    assert first.status_code == 202, first.text
    assert first.json()["checkpoint_id"] == CP
    # resent, and once more from the card's QR code: the same check-in, the same scan
    again = phone.post("/v1/checkins", json=body)
    by_card = phone.post(
        "/v1/checkins", json={"poster": poster, "qr": CARD, "checkin_id": "phone-7-1"}
    )
    assert again.status_code == by_card.status_code == 202
    assert first.json()["scan_id"] == again.json()["scan_id"] == by_card.json()["scan_id"]

    stats = platform.wait_processed(1)
    assert stats["scans_processed"] == 1 and stats["visits_total"] == 1, stats
    assert stats["visits_by_district"] == {HOME: 1}
    owner.close()
    phone.close()
    # in ClickHouse: the one visit, a self check-in at the poster's checkpoint
    platform.stop()
    (visit,) = visits_in_clickhouse(platform)
    assert visit == [first.json()["scan_id"], CP, "self"]


def visits_in_clickhouse(platform: Platform) -> list[list[str]]:
    """The platform's visits, read by a process of their own once the platform stopped (the
    embedded ClickHouse is one process's at a time)."""
    code = (
        "import json, sys; from datetime import UTC, datetime, timedelta; "
        "from infra.clickhouse import ClickHouse; "
        "ch = ClickHouse(sys.argv[1], sys.argv[2]); "
        "since = datetime.now(UTC) - timedelta(days=30); "
        "print(json.dumps([[v.scan_id, v.checkpoint_id, v.source] "
        "for chunk in ch.iter_visits(since) for v in chunk]))"
    )
    s = platform.settings
    out = subprocess.run(
        [sys.executable, "-c", code, s.clickhouse_url, s.clickhouse.database],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found: list[list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return found
