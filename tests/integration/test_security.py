"""Security checks over a whole run of the platform: residents imported, scans, F0 reports,
declarations, imports of every kind, check-ins and gate checks with a card's QR text,
reviews, reads of named people, alerts, posters and metrics, with every secret set.

- ClickHouse (the embedded chDB, read after the platform stopped): every String, Array,
  Map or Tuple column of every table is scanned; no raw ID number, name or street
  address of the imported residents appears anywhere;
- logs (``platform.log`` and ``<data_dir>/logs/*``, written at DEBUG): no token, device
  key, metrics token, poster key or pseudonym secret appears, not even 12 characters of
  one, nor any raw ID number.

The other security checks live in ``test_access.py`` (every personal-data route audited;
a device key acting for another checkpoint; expired and revoked tokens and devices).
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gate.http_auth import BearerAuth, DeviceAuth
from infra.clickhouse import ClickHouse
from infra.settings import Settings
from registry.posters import make_poster_payload
from tests.integration.conftest import Platform
from tests.integration.test_access import AWAY, CP, HOME, P1, P2, P3, World, staff_csv
from tracing.events import VN_TZ

pytestmark = pytest.mark.integration

P4 = "001185000304"  # born 1985, Nữ: in the extra imports below, and on a card
NAMES = ["Nguyễn Văn An", "Trần Thị Bình", "Phạm Văn Cường", "Lê Văn Khác", "Đỗ Thị Dung"]
ADDRESSES = ["Số 1 Kim Mã", "Số 2 Hàng Bạc", "Số 3 Kim Mã", "Số 4 Ngõ 5 Liễu Giai"]
CARD = (
    f"{P4}|012345678|Đỗ Thị Dung|01011985|Nữ|"
    "Số 4 Ngõ 5 Liễu Giai, Phường Liễu Giai, Quận Ba Đình, Hà Nội|01012021"
)
SECRETS_ENV = {
    "DANCU_PSEUDONYM_SECRET": "pseudonym-" + secrets.token_hex(16),
    "DANCU_METRICS_TOKEN": "metrics-" + secrets.token_hex(16),
    "DANCU_POSTER_KEY": "poster-" + secrets.token_hex(16),
    "DANCU_LOG_LEVEL": "DEBUG",  # the most a log ever says
}


@dataclass
class Run:
    platform: Platform
    secrets: dict[str, str] = field(default_factory=dict)  # what → value

    @property
    def settings(self) -> Settings:
        return self.platform.settings


def extra_residents_csv(tmp: Path) -> Path:
    path = tmp / "more.csv"
    path.write_text(
        "id,name,dob,gender,address,district,ward,household_id\n"
        f"{P4},Đỗ Thị Dung,1985-01-01,Nữ,Số 4 Ngõ 5 Liễu Giai,{HOME},Phường Liễu Giai,H4\n",
        encoding="utf-8",
    )
    return path


def exercise(w: World, run: Run, tmp: Path) -> None:
    """Everything the platform does with people's data, beyond what World set up."""
    p = w.p
    now = datetime.now(UTC)
    steward = "steward"
    imports = {
        "test-results": "person_id,name,dob,result,test_type,sampled_at\n"
        f"{P2},Trần Thị Bình,1990-01-01,negative,PCR,{(now - timedelta(hours=5)).isoformat()}\n",
        "f0-positives": "person_id,name,dob,sample_time\n"
        f"{P4},Đỗ Thị Dung,1985-01-01,{(now - timedelta(hours=6)).isoformat()}\n",
        "recoveries": "person_id,name,dob,recovered_date\n"
        f"{P3},Phạm Văn Cường,1990-01-01,2021-10-01\n",
        "vaccinations": "person_id,name,dob,dose,vaccine,date\n"
        f"{P2},Trần Thị Bình,1990-01-01,1,AstraZeneca,2021-08-01\n"
        f"{P4},Đỗ Thị Dung,1985-01-01,1,Pfizer,2021-08-02\n",
    }
    for kind, body in imports.items():
        r = w.call("POST", f"/v1/imports/{kind}", steward, content=body.encode())
        assert r.status_code == 201, (kind, r.text)
    r = w.call(
        "POST",
        "/v1/imports/staff",
        "owner",
        content=staff_csv(),
    )
    assert r.status_code == 201, r.text
    # the steward accepts the mismatched vaccination World imported (a name that differs)
    r = w.call("POST", f"/v1/review/{w.review_id}", steward, json={"decision": "accept"})
    assert r.status_code == 200, r.text
    # declarations, by the device and by an official
    r = w.call(
        "POST",
        "/v1/declarations/health",
        "device",
        json={"person_id": P1, "symptoms": ["sốt"], "contact_with_f0": True},
    )
    assert r.status_code == 202, r.text
    r = w.call(
        "POST",
        "/v1/declarations/travel",
        "official",
        json={
            "person_id": P3,
            "from_province": "079",
            "departure_date": "2021-11-01",
            "arrival_date": "2021-11-02",
        },
    )
    assert r.status_code == 202, r.text
    # a gate check and a self check-in from a card's QR text (name and address in it)
    r = w.call("POST", "/v1/gate/check", "device", json={"checkpoint_id": CP, "qr": CARD})
    assert r.status_code == 200, r.text
    key = SECRETS_ENV["DANCU_POSTER_KEY"].encode()  # the platform's (from its environment)
    poster = make_poster_payload(key, CP, datetime.now(VN_TZ).date())
    r = w.call("POST", "/v1/checkins", None, json={"poster": poster, "qr": CARD})
    assert r.status_code == 202, r.text
    r = w.call("POST", "/v1/checkins", None, json={"poster": poster, "person_id": P2})
    assert r.status_code == 202, r.text
    # scans of everyone, and a report of P4 (imported above)
    scans = [
        {
            "scan_id": f"sec-{uuid.uuid4().hex}",
            "person_id": pid,
            "checkpoint_id": CP,
            "ts": (now - timedelta(minutes=30 + i)).isoformat(),
            "source": "gate",
        }
        for i, pid in enumerate((P1, P2, P3, P4) * 5)
    ]
    assert w.call("POST", "/v1/scans", "device", json=scans).status_code == 202
    report = {
        "report_id": "sec-r1",
        "person_id": P4,
        "sample_time": (now - timedelta(hours=2)).isoformat(),
        "reported_at": (now - timedelta(minutes=10)).isoformat(),
    }
    r = w.call("POST", "/v1/reports/f0", "official", json=report)
    assert r.status_code == 202, r.text
    # named reads (audited), the dashboard's aggregates, a poster, metrics
    for path in (
        f"/v1/residents/{P1}/status",
        f"/v1/residents/{P4}/why",
        f"/v1/contacts/{P4}",
        "/v1/exposures?f0=sec-r1",
        "/v1/reports/f0/sec-r1",
        "/v1/testing/flagged",
        "/v1/alerts",
    ):
        assert w.call("GET", path, "official").status_code in (200, 404), path
    for path in ("/v1/analytics/scans", "/v1/analytics/cases", "/v1/clusters", "/v1/levels"):
        assert w.call("GET", path, "epidemiologist").status_code == 200, path
    assert w.call("GET", f"/v1/checkpoints/{CP}/poster.png", "owner").status_code == 200
    metrics = httpx.get(
        f"{p.url}/metrics",
        headers={"Authorization": f"Bearer {SECRETS_ENV['DANCU_METRICS_TOKEN']}"},
        timeout=30,
    )
    assert metrics.status_code == 200
    # a device made by an admin, its key used; refusals that carry real credentials
    made = w.call("POST", "/v1/devices", "admin", json={"checkpoint_ids": [CP]}).json()
    run.secrets["device key (admin API)"] = made["key"]
    fresh = DeviceAuth(made["device_id"], made["key"])
    r = httpx.post(
        f"{p.url}/v1/gate/check", json={"checkpoint_id": CP, "person_id": P2}, auth=fresh
    )
    assert r.status_code == 200, r.text
    r = httpx.post(  # another checkpoint's: refused
        f"{p.url}/v1/gate/check",
        json={"checkpoint_id": "acc-cp2", "person_id": P2},
        auth=fresh,
    )
    assert r.status_code == 403
    away = BearerAuth(p.token("official", AWAY))
    run.secrets["token (official elsewhere)"] = away.token
    assert httpx.get(f"{p.url}/v1/residents/{P1}/status", auth=away).status_code == 404
    assert httpx.get(f"{p.url}/v1/audit", auth=away).status_code == 403
    # wait until every record is written where it goes
    p.wait_processed(2 + 2 + len(scans), timeout=180)  # World's, the check-ins, these
    time.sleep(5)  # the audit drain and the sink


@pytest.fixture(scope="module")
def run(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("security")
    p = Platform(base_settings, tmp / "dancu", **SECRETS_ENV)
    result = Run(p, {k: v for k, v in SECRETS_ENV.items() if k != "DANCU_LOG_LEVEL"})
    try:
        loaded = p.run_cli("import", "residents", str(extra_residents_csv(tmp)))
        assert loaded.returncode == 0, loaded.stderr
        w = World(p, tmp)  # imports its residents, then starts the platform
        for role, auth in w.auth.items():
            if isinstance(auth, BearerAuth):
                result.secrets[f"token ({role})"] = auth.token
            elif isinstance(auth, DeviceAuth):
                result.secrets[f"device key ({role})"] = auth.key
        result.secrets["device key (other checkpoint)"] = w.other_device.key
        exercise(w, result, tmp)
    finally:
        p.stop()
        p.sign_out()
    yield result


def needles(values: list[str]) -> list[str]:
    """Each value as stored might be: as written, decomposed, upper and lower case."""
    out: set[str] = set()
    for v in values:
        for form in ("NFC", "NFD"):
            text = unicodedata.normalize(form, v)
            out.update({text, text.upper(), text.lower()})
    return sorted(out)


def test_no_raw_id_number_or_name_anywhere_in_clickhouse(run: Run) -> None:
    settings = run.settings
    ids = [P1, P2, P3, P4]
    wanted = ids + needles(NAMES) + needles(ADDRESSES)
    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
    db = settings.clickhouse.database
    try:
        columns = ch.call(
            lambda c: (
                c.query(
                    "SELECT c.table, c.name, c.type FROM system.columns AS c "
                    "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
                    "WHERE c.database = %(db)s AND t.engine NOT IN ('View', 'MaterializedView') "
                    "ORDER BY c.table, c.name",
                    parameters={"db": db},
                ).result_rows
            )
        )
        tables = {t for t, _, _ in columns}
        textual = [
            (t, n, ty)
            for t, n, ty in columns
            if any(k in ty for k in ("String", "Array", "Map", "Tuple", "JSON", "Object"))
        ]
        found: list[str] = []
        rows_seen: dict[str, int] = {}

        def rows(sql: str, **parameters: object) -> list[Sequence[Any]]:
            return list(ch.call(lambda c: c.query(sql, parameters=parameters).result_rows))

        for table in sorted(tables):
            rows_seen[table] = int(rows(f"SELECT count() FROM {db}.`{table}`")[0][0])
        for table, name, kind in textual:
            # toString: one text for any type (arrays, maps and tuples as literals, UTF-8 kept)
            sql = (
                f"SELECT toString(`{name}`) AS v FROM {db}.`{table}` "
                f"WHERE multiSearchAny(toString(`{name}`), %(needles)s) LIMIT 3"
            )
            for (value,) in rows(sql, needles=wanted):
                what = [x for x in wanted if x in str(value)]
                found.append(f"{table}.{name} ({kind}): {what} in {str(value)[:200]!r}")
    finally:
        ch.close()
    # the scan looked at real data: the run wrote to the tables that hold people's traces
    for table in ("visits", "residents", "health_records", "audit_log", "f0_cases", "exposures"):
        assert rows_seen.get(table, 0) > 0, f"nothing in {table}: {rows_seen}"
    assert len(textual) >= 20, textual
    assert not found, "\n".join(found)


def log_lines(settings: Settings) -> list[tuple[str, str]]:
    files = [settings.data_dir / "platform.log", *sorted((settings.data_dir / "logs").glob("*"))]
    out: list[tuple[str, str]] = []
    for f in files:
        if f.is_file():
            out.extend((f.name, line) for line in f.read_text("utf-8", "replace").splitlines())
    return out


def test_no_secret_and_no_id_number_in_any_log_line(run: Run) -> None:
    lines = log_lines(run.settings)
    assert len(lines) > 200, "the run logged almost nothing: the check would prove nothing"
    assert any('"level":"DEBUG"' in line for _, line in lines), "not logged at DEBUG"
    assert any("/v1/residents/{person_id}/status" in line for _, line in lines)
    # any 12 characters of a secret (a prefix or a suffix shown "to identify it" too)
    pieces: dict[str, str] = {}
    for what, value in run.secrets.items():
        assert len(value) >= 16, what
        for i in range(len(value) - 11):
            pieces[value[i : i + 12]] = what
    pieces.update({pid: "a raw ID number" for pid in (P1, P2, P3, P4)})
    pattern = re.compile("|".join(re.escape(piece) for piece in pieces))
    found = [
        f"{name}: {pieces[m.group(0)]} in {line[:300]}"
        for name, line in lines
        if (m := pattern.search(line)) is not None
    ]
    assert not found, f"{len(found)} line(s):\n" + "\n".join(found[:20])
