"""Access by role on the real platform: every route of the OpenAPI schema, called with no
credential and as every role, gets exactly the status the policy says (401, 403, or the
route's own answer); every personal-data route writes an audit record naming the caller,
the route and the people; devices act for their own checkpoints only; officials see
their own district; revoked, expired, forged and replayed credentials are refused."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.access import POLICY, PUBLIC_PATHS, SELF_SIGNED
from gate.http_auth import BearerAuth, DeviceAuth
from infra.secrets import poster_key
from registry.posters import make_poster_payload
from tests.integration.conftest import Platform, with_credentials
from tracing.events import VN_TZ

pytestmark = pytest.mark.integration

HOME, AWAY = "Ba Đình", "Hoàn Kiếm"
P1, P2 = "001090000301", "001190000302"  # P1 lives in HOME, P2 in AWAY
P3 = "001090000303"  # in HOME: with P1 at CP for an hour, so P1's report flags P3 (F1)
ORG = "Công ty Thử"
CP, CP_OTHER = "acc-cp1", "acc-cp2"
ROLES = ("device", "official", "epidemiologist", "steward", "owner", "admin")
NOW = datetime.now(UTC)

# Routes that show or export personal data, and the roles for whom they do (an owner's
# alerts name no one): each such call writes one audit record.
PEOPLE_ROLES = frozenset({"official", "epidemiologist", "steward", "owner", "admin"})
PERSONAL: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/v1/residents/{person_id}/status"): PEOPLE_ROLES,
    ("GET", "/v1/residents/{person_id}/why"): PEOPLE_ROLES,
    ("GET", "/v1/contacts/{person_id}"): PEOPLE_ROLES,
    ("GET", "/v1/exposures"): PEOPLE_ROLES,
    ("GET", "/v1/reports/f0/{report_id}"): PEOPLE_ROLES,
    ("GET", "/v1/review"): PEOPLE_ROLES,
    ("POST", "/v1/review/{review_id}"): PEOPLE_ROLES,
    ("GET", "/v1/imports/{import_id}/records"): PEOPLE_ROLES,
    ("POST", "/v1/imports/{kind}"): PEOPLE_ROLES,
    ("POST", "/v1/gate/check"): PEOPLE_ROLES | {"device"},
    ("POST", "/v1/declarations/health"): PEOPLE_ROLES | {"device"},
    ("POST", "/v1/declarations/travel"): PEOPLE_ROLES | {"device"},
    ("POST", "/v1/reports/f0"): PEOPLE_ROLES,
    ("PUT", "/v1/reports/f0/{report_id}"): PEOPLE_ROLES,
    ("DELETE", "/v1/reports/f0/{report_id}"): PEOPLE_ROLES,
    ("GET", "/v1/imports"): PEOPLE_ROLES,
    ("GET", "/v1/imports/{import_id}"): PEOPLE_ROLES,
    ("GET", "/v1/organisations/staff"): PEOPLE_ROLES,
    ("GET", "/v1/testing/flagged"): PEOPLE_ROLES,
    ("GET", "/v1/alerts/stream"): frozenset({"official"}),
    ("GET", "/v1/alerts"): frozenset({"official"}),
    ("GET", "/v1/alerts/{alert_id}"): frozenset({"official"}),
    ("POST", "/v1/alerts/{alert_id}/ack"): frozenset({"official"}),
    ("POST", "/v1/alerts/{alert_id}/followup"): frozenset({"official"}),
}


def residents_csv() -> str:
    return (
        "id,name,dob,gender,address,district,ward,household_id\n"
        f"{P1},Nguyễn Văn An,1990-01-01,Nam,Số 1 Kim Mã,{HOME},Phường Kim Mã,H1\n"
        f"{P2},Trần Thị Bình,1990-01-01,Nữ,Số 2 Hàng Bạc,{AWAY},Phường Hàng Bạc,H2\n"
        f"{P3},Phạm Văn Cường,1990-01-01,Nam,Số 3 Kim Mã,{HOME},Phường Kim Mã,H3\n"
    )


def report(report_id: str, person_id: str = P1) -> dict[str, object]:
    return {
        "report_id": report_id,
        "person_id": person_id,
        "sample_time": (NOW - timedelta(hours=3)).isoformat(),
        "symptomatic": False,
        "reported_at": (NOW - timedelta(hours=1)).isoformat(),
    }


def staff_csv() -> bytes:
    return (
        f"person_id,name,dob,organisation,unit\n{P1},Nguyễn Văn An,1990-01-01,{ORG},kho\n"
    ).encode()


class World:
    """The data every route's example needs, made once by the roles that may make it."""

    def __init__(self, p: Platform, tmp: Path) -> None:
        (tmp / "residents.csv").write_text(residents_csv(), encoding="utf-8")
        loaded = p.run_cli("import", "residents", str(tmp / "residents.csv"))
        assert loaded.returncode == 0, loaded.stderr
        p.start()
        self.p = p
        self.auth: dict[str, httpx.Auth] = {
            "official": p.auth("official", HOME),
            "epidemiologist": p.auth("epidemiologist"),
            "steward": p.auth("steward"),
            "owner": p.auth("owner", org=ORG),
            "admin": p.auth("admin"),
        }
        self.names: dict[str, str] = {}
        for role in self.auth:
            me = self.call("GET", "/v1/me", role)
            assert me.status_code == 200, me.text
            self.names[role] = me.json()["name"]
            assert me.json()["role"] == role
        cps = [
            {"checkpoint_id": CP, "type": "shop", "district": HOME},
            {"checkpoint_id": CP_OTHER, "type": "shop", "district": AWAY},
        ]
        r = self.call("POST", "/v1/checkpoints", "owner", json=cps)
        assert r.status_code == 201, r.text
        device = p.device(CP)
        self.auth["device"] = device
        self.names["device"] = device.device_id
        self.other_device = p.device(CP_OTHER)
        # an import with a mismatch (a review item), and reports to act on
        body = (
            "person_id,name,dob,dose,vaccine,date\n"
            f"{P1},Lê Văn Khác,1990-01-01,1,Pfizer,2021-09-01\n"
        )
        r = self.call("POST", "/v1/imports/vaccinations", "steward", content=body.encode())
        assert r.status_code == 201, r.text
        self.import_id = r.json()["import_id"]
        (item,) = self.call("GET", "/v1/review", "steward").json()
        self.review_id = item["review_id"]
        visits = [
            {
                "scan_id": f"acc-visit-{pid[-4:]}",  # never the ID number itself
                "person_id": pid,
                "checkpoint_id": CP,
                "ts": (NOW - timedelta(hours=5)).isoformat(),
                "t_out": (NOW - timedelta(hours=4)).isoformat(),
                "source": "gate",
            }
            for pid in (P1, P3)
        ]
        r = self.call("POST", "/v1/scans", "device", json=visits)
        assert r.status_code == 202, r.text
        p.wait_processed(2)
        for rid in ("acc-r1", "acc-r2"):
            r = self.call("POST", "/v1/reports/f0", "official", json=report(rid))
            assert r.status_code == 202, r.text
        # the alerts P1's report raised: P3's for the district, the shop's for its owner
        self.alerts = {role: self._first_alert(role) for role in ("official", "owner")}
        self.user = self.call(
            "POST", "/v1/users", "admin", json={"name": "acc-victim", "role": "epidemiologist"}
        ).json()
        self.device_id = self.call(
            "POST", "/v1/devices", "admin", json={"checkpoint_ids": [CP]}
        ).json()["device_id"]
        # the audit checks count records since a second before each call: the setup's
        # own reads (the alert polls above) must be older than that
        time.sleep(1.1)

    def _first_alert(self, role: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = self.call("GET", "/v1/alerts", role).json()["alerts"]
            # a venue alert names no report (nor anyone): the owner's first will do
            mine = [a for a in found if a.get("report_id", "acc-r1") == "acc-r1"]
            if mine:
                return str(mine[0]["alert_id"])
            time.sleep(0.3)
        raise AssertionError(f"no alert for the {role} from report acc-r1")

    def alert_of(self, role: str) -> str:
        """The role's own alert (any ID for roles refused before the route runs)."""
        return self.alerts.get(role, "0" * 24)

    def webhook_of(self, role: str) -> str:
        """A webhook the role registered just now (to delete)."""
        if role not in ("official", "owner"):
            return "wh-0000000000000000"
        r = self.call("POST", "/v1/webhooks", role, json={"url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        return str(r.json()["webhook_id"])

    def call(self, method: str, path: str, role: str | None, **kw: Any) -> httpx.Response:
        auth = self.auth[role] if role else None
        url = f"{self.p.url}{path}"
        if "/stream" in path:  # an event stream never ends: read up to its first alert
            with httpx.stream(method, url, auth=auth, timeout=30, **kw) as r:
                if r.status_code != 200:
                    r.read()
                    return r
                alert = False
                for line in r.iter_lines():
                    if alert and line.startswith("data:"):
                        break
                    alert = alert or line == "event: alert"
                return r
        return httpx.request(method, url, auth=auth, timeout=120, **kw)


Example = Callable[[World, str], tuple[str, dict[str, Any]]]


def _scan(*_: object) -> tuple[str, dict[str, Any]]:
    scan = {
        "scan_id": f"acc-{uuid.uuid4().hex}",
        "person_id": P1,
        "checkpoint_id": CP,
        "ts": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "source": "gate",
    }
    return "/v1/scans", {"json": [scan]}


def _new_checkpoint(*_: object) -> tuple[str, dict[str, Any]]:
    body = [{"checkpoint_id": f"acc-{uuid.uuid4().hex[:8]}", "type": "shop", "district": HOME}]
    return "/v1/checkpoints", {"json": body}


def _fixed(path: str, **kw: Any) -> Example:
    return lambda *_: (path, kw)


# (method, route) → (example request, the status its allowed roles get).
EXAMPLES: dict[tuple[str, str], tuple[Example, int]] = {
    ("POST", "/v1/scans"): (_scan, 202),
    ("POST", "/v1/gate/check"): (
        _fixed("/v1/gate/check", json={"checkpoint_id": CP, "person_id": P1}),
        200,
    ),
    ("POST", "/v1/declarations/health"): (
        _fixed("/v1/declarations/health", json={"person_id": P1, "symptoms": ["fever"]}),
        202,
    ),
    ("POST", "/v1/declarations/travel"): (
        _fixed(
            "/v1/declarations/travel",
            json={
                "person_id": P1,
                "from_province": "079",
                "departure_date": "2021-11-01",
                "arrival_date": "2021-11-02",
            },
        ),
        202,
    ),
    ("GET", "/v1/stats/live"): (_fixed("/v1/stats/live"), 200),
    ("GET", "/v1/me"): (_fixed("/v1/me"), 200),
    ("POST", "/v1/checkpoints"): (_new_checkpoint, 201),
    ("PUT", "/v1/checkpoints/{checkpoint_id}"): (
        _fixed(
            f"/v1/checkpoints/{CP}",
            json={"type": "shop", "district": HOME, "name": "Cửa hàng", "owner": ORG},
        ),
        200,
    ),
    ("GET", "/v1/checkpoints/{checkpoint_id}/poster.png"): (
        _fixed(f"/v1/checkpoints/{CP}/poster.png"),
        200,
    ),
    ("GET", "/v1/checkpoints/{checkpoint_id}/poster.svg"): (
        _fixed(f"/v1/checkpoints/{CP}/poster.svg"),
        200,
    ),
    ("POST", "/v1/imports/{kind}"): (_fixed("/v1/imports/staff", content=staff_csv()), 201),
    ("GET", "/v1/imports"): (_fixed("/v1/imports"), 200),
    ("GET", "/v1/imports/{import_id}"): (lambda w, _: (f"/v1/imports/{w.import_id}", {}), 200),
    ("GET", "/v1/imports/{import_id}/records"): (
        lambda w, _: (f"/v1/imports/{w.import_id}/records", {}),
        200,
    ),
    ("GET", "/v1/review"): (_fixed("/v1/review"), 200),
    ("POST", "/v1/review/{review_id}"): (
        lambda w, _: (f"/v1/review/{w.review_id}", {"json": {"decision": "reject"}}),
        200,
    ),
    ("GET", "/v1/quality"): (_fixed("/v1/quality"), 200),
    ("GET", "/v1/residents/{person_id}/status"): (_fixed(f"/v1/residents/{P1}/status"), 200),
    ("POST", "/v1/reports/f0"): (
        lambda *_: ("/v1/reports/f0", {"json": report(f"acc-{uuid.uuid4().hex[:8]}")}),
        202,
    ),
    ("PUT", "/v1/reports/f0/{report_id}"): (
        _fixed("/v1/reports/f0/acc-r1", json=report("acc-r1")),
        202,
    ),
    ("DELETE", "/v1/reports/f0/{report_id}"): (_fixed("/v1/reports/f0/acc-r2"), 202),
    # the route's own answer for a report that is not held: access was granted
    ("POST", "/v1/reports/f0/{report_id}/approve"): (
        _fixed("/v1/reports/f0/acc-r1/approve"),
        409,
    ),
    ("GET", "/v1/reports/f0/{report_id}"): (_fixed("/v1/reports/f0/acc-r1"), 200),
    ("GET", "/v1/exposures"): (_fixed("/v1/exposures", params={"f0": "acc-r1"}), 200),
    ("GET", "/v1/residents/{person_id}/why"): (_fixed(f"/v1/residents/{P1}/why"), 200),
    ("GET", "/v1/contacts/{person_id}"): (_fixed(f"/v1/contacts/{P1}"), 200),
    ("GET", "/v1/clusters"): (_fixed("/v1/clusters"), 200),
    # no cluster has this ID: the route's own 404
    ("GET", "/v1/clusters/{cluster_id}/graph"): (_fixed("/v1/clusters/c-none/graph"), 404),
    ("GET", "/v1/hotspots"): (_fixed("/v1/hotspots"), 200),
    ("GET", "/v1/tracing/summary"): (_fixed("/v1/tracing/summary"), 200),
    ("GET", "/v1/analytics/scans"): (_fixed("/v1/analytics/scans"), 200),
    ("GET", "/v1/analytics/cases"): (_fixed("/v1/analytics/cases"), 200),
    ("GET", "/v1/analytics/vaccination"): (_fixed("/v1/analytics/vaccination"), 200),
    ("GET", "/v1/analytics/colours"): (_fixed("/v1/analytics/colours"), 200),
    ("GET", "/v1/analytics/checkpoints/top"): (_fixed("/v1/analytics/checkpoints/top"), 200),
    ("GET", "/v1/levels"): (_fixed("/v1/levels"), 200),
    ("GET", "/v1/alerts/stream"): (
        _fixed("/v1/alerts/stream", params={"last_event_id": "0-0"}),
        200,
    ),
    ("GET", "/v1/alerts"): (_fixed("/v1/alerts"), 200),
    ("GET", "/v1/alerts/{alert_id}"): (lambda w, role: (f"/v1/alerts/{w.alert_of(role)}", {}), 200),
    ("POST", "/v1/alerts/{alert_id}/ack"): (
        lambda w, role: (f"/v1/alerts/{w.alert_of(role)}/ack", {}),
        200,
    ),
    ("POST", "/v1/alerts/{alert_id}/followup"): (
        lambda w, role: (
            f"/v1/alerts/{w.alert_of(role)}/followup",
            {"json": {"action": "contacted", "note": "gọi điện"}},
        ),
        200,
    ),
    ("POST", "/v1/webhooks"): (
        _fixed("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}),
        201,
    ),
    ("GET", "/v1/webhooks"): (_fixed("/v1/webhooks"), 200),
    ("DELETE", "/v1/webhooks/{webhook_id}"): (
        lambda w, role: (f"/v1/webhooks/{w.webhook_of(role)}", {}),
        204,
    ),
    ("GET", "/v1/owner/checkpoints"): (_fixed("/v1/owner/checkpoints"), 200),
    ("GET", "/v1/testing/flagged"): (_fixed("/v1/testing/flagged"), 200),
    ("GET", "/v1/testing/summary"): (_fixed("/v1/testing/summary"), 200),
    ("GET", "/v1/organisations/staff"): (_fixed("/v1/organisations/staff"), 200),
    ("POST", "/v1/admin/rebuild"): (_fixed("/v1/admin/rebuild"), 200),
    ("GET", "/v1/audit"): (_fixed("/v1/audit"), 200),
    ("POST", "/v1/users"): (
        lambda *_: (
            "/v1/users",
            {"json": {"name": f"u-{uuid.uuid4().hex[:6]}", "role": "epidemiologist"}},
        ),
        201,
    ),
    ("DELETE", "/v1/users/{name}"): (_fixed("/v1/users/acc-victim"), 200),
    ("POST", "/v1/devices"): (_fixed("/v1/devices", json={"checkpoint_ids": [CP]}), 201),
    ("DELETE", "/v1/devices/{device_id}"): (lambda w, _: (f"/v1/devices/{w.device_id}", {}), 200),
}


def schema_routes(p: Platform) -> set[tuple[str, str]]:
    schema = httpx.get(f"{p.url}/openapi.json", timeout=10).json()
    return {
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method in ops
        # self-signed routes need no credential (their body is the proof): checked apart
        if path not in PUBLIC_PATHS and (method.upper(), path) not in SELF_SIGNED
    }


def audited(w: World, role: str, route: str, since: datetime) -> list[dict[str, Any]]:
    r = w.call(
        "GET", "/v1/audit", "admin", params={"actor": w.names[role], "since": since.isoformat()}
    )
    assert r.status_code == 200, r.text
    return [e for e in r.json() if e["route"] == route]


def test_every_route_answers_each_role_exactly_as_the_policy_says(
    platform: Platform, tmp_path: Path
) -> None:
    w = World(platform, tmp_path)
    routes = schema_routes(platform)
    failures: list[str] = [f"{m} {r}: no example here" for m, r in sorted(routes - set(EXAMPLES))]
    failures += [f"{m} {r}: nobody may use it" for m, r in sorted(routes - set(POLICY))]
    for method, route in sorted(routes & set(EXAMPLES) & set(POLICY)):
        example, allowed_status = EXAMPLES[(method, route)]
        allowed = POLICY[(method, route)]
        for role in (None, *ROLES):
            since = datetime.now(UTC) - timedelta(seconds=1)
            path, kw = example(w, role or "")
            r = w.call(method, path, role, **kw)
            expected = 401 if role is None else allowed_status if role in allowed else 403
            if r.status_code != expected:
                failures.append(f"{method} {route} as {role}: {r.status_code} ≠ {expected}")
                continue
            if expected in (401, 403):
                assert "error" in r.json() and r.json()["error"], f"{method} {route}: no reason"
            if role in allowed and role in PERSONAL.get((method, route), ()):
                entries = audited(w, role, f"{method} {route}", since)
                if len(entries) != 1:
                    failures.append(
                        f"{method} {route} as {role}: {len(entries)} audit records: "
                        f"{entries} since {since}"
                    )
                elif entries[0]["role"] != role:
                    failures.append(f"{method} {route}: audit role {entries[0]['role']}")
    assert not failures, "\n".join(failures)


def test_scope_credentials_and_replays(platform: Platform, tmp_path: Path) -> None:
    w = World(platform, tmp_path)
    # officials: their own district only; a resident elsewhere answers as an unknown ID
    # (the refusal does not say whether or where P1 lives)
    away = BearerAuth(platform.token("official", AWAY))
    r = httpx.get(f"{platform.url}/v1/residents/{P1}/status", auth=away, timeout=30)
    assert r.status_code == 404 and AWAY in r.json()["error"] and HOME not in r.json()["error"]
    unknown = httpx.get(f"{platform.url}/v1/residents/001090000399/status", auth=away, timeout=30)
    assert unknown.json()["error"].replace("0399", "0301") == r.json()["error"]
    r = httpx.post(f"{platform.url}/v1/reports/f0", json=report("acc-x"), auth=away, timeout=30)
    assert r.status_code == 422 and "not in the registry" in r.json()["error"]
    r = httpx.get(f"{platform.url}/v1/exposures", params={"f0": P1}, auth=away, timeout=30)
    assert r.status_code == 404 and HOME not in r.json()["error"]
    r = w.call("GET", f"/v1/residents/{P2}/status", "official")
    assert r.status_code == 404
    # the stated purpose is recorded, in Vietnamese too (RFC 8187 from a browser); the log
    # keeps milliseconds, so `since` must not share one with the read of P2 just above
    time.sleep(0.01)
    since = datetime.now(UTC)
    r = w.call(
        "GET",
        f"/v1/residents/{P1}/status",
        "official",
        headers={"X-Purpose": "UTF-8''truy%20v%E1%BA%BFt%20F1"},
    )
    assert r.status_code == 200
    (entry,) = audited(w, "official", "GET /v1/residents/{person_id}/status", since)
    assert entry["why"] == "truy vết F1" and entry["people_count"] == 1
    assert entry["people"] and P1 not in str(entry)
    # what reached ClickHouse leaves the Redis stream (its cap bites only in an outage)
    backlog = with_credentials(
        platform.settings, lambda c: c.r.xlen(f"{platform.settings.redis_prefix}audit")
    )
    assert backlog <= 3
    # devices: their own checkpoint only, the whole batch refused
    _, scan = _scan()
    r = httpx.post(f"{platform.url}/v1/scans", json=scan["json"], auth=w.other_device, timeout=30)
    assert r.status_code == 403 and CP in r.json()["error"]
    r = httpx.post(
        f"{platform.url}/v1/gate/check",
        json={"checkpoint_id": CP, "person_id": P1},
        auth=w.other_device,
        timeout=30,
    )
    assert r.status_code == 403
    # nor by claiming the other checkpoint's device: a key signs for its own device only
    mine, theirs = w.auth["device"], w.other_device
    assert isinstance(mine, DeviceAuth) and isinstance(theirs, DeviceAuth)
    _, other_scan = _scan()
    other_scan["json"][0]["checkpoint_id"] = CP_OTHER
    impostor = DeviceAuth(theirs.device_id, mine.key)
    r = httpx.post(f"{platform.url}/v1/scans", json=other_scan["json"], auth=impostor, timeout=30)
    assert r.status_code == 401 and "does not match" in r.json()["error"], r.text
    # a signed request: replayed, tampered, stale
    device = w.auth["device"]
    assert isinstance(device, DeviceAuth)
    body = httpx.Request("POST", "http://x", json=scan["json"]).content
    headers = device.headers("POST", "/v1/scans", body)
    headers["content-type"] = "application/json"
    first = httpx.post(f"{platform.url}/v1/scans", content=body, headers=headers, timeout=30)
    assert first.status_code == 202, first.text
    again = httpx.post(f"{platform.url}/v1/scans", content=body, headers=headers, timeout=30)
    assert again.status_code == 401 and "replay" in again.json()["error"]
    tampered = body.replace(P1.encode(), P2.encode())
    fresh = device.headers("POST", "/v1/scans", body)
    r = httpx.post(
        f"{platform.url}/v1/scans",
        content=tampered,
        headers={**fresh, "content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 401 and "does not match" in r.json()["error"]
    stale = device.headers("POST", "/v1/scans", body)
    stale["X-Timestamp"] = str(int(time.time()) - 3600)
    r = httpx.post(f"{platform.url}/v1/scans", content=body, headers=stale, timeout=30)
    assert r.status_code == 401 and "X-Timestamp" in r.json()["error"]
    # revoked and expired tokens, a revoked device
    token = platform.token("epidemiologist")
    ok = httpx.get(f"{platform.url}/v1/me", auth=BearerAuth(token), timeout=30)
    assert ok.status_code == 200
    name = ok.json()["name"]
    assert w.call("DELETE", f"/v1/users/{name}", "admin").status_code == 200
    r = httpx.get(f"{platform.url}/v1/me", auth=BearerAuth(token), timeout=30)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    short, _ = with_credentials(
        platform.settings, lambda c: c.add_user("acc-short", "admin", seconds=1)
    )
    time.sleep(1.5)
    r = httpx.get(f"{platform.url}/v1/me", auth=BearerAuth(short), timeout=30)
    assert r.status_code == 401
    assert w.call("DELETE", f"/v1/devices/{device.device_id}", "admin").status_code == 200
    _, scan = _scan()
    r = httpx.post(f"{platform.url}/v1/scans", json=scan["json"], auth=device, timeout=30)
    assert r.status_code == 401 and "in service" in r.json()["error"]
    # a report's ID may not carry a personal ID number (it is shown to epidemiologists)
    r = w.call("POST", "/v1/reports/f0", "official", json=report(f"f0-{P1}"))
    assert r.status_code == 422 and "report_id" in r.json()["error"]
    # an open alert stream ends once its official's token is revoked
    watcher = platform.token("official", HOME)
    name = httpx.get(f"{platform.url}/v1/me", auth=BearerAuth(watcher), timeout=30).json()["name"]
    lines: list[str] = []
    with httpx.stream(
        "GET", f"{platform.url}/v1/alerts/stream", auth=BearerAuth(watcher), timeout=60
    ) as stream:
        assert stream.status_code == 200
        assert w.call("DELETE", f"/v1/users/{name}", "admin").status_code == 200
        for line in stream.iter_lines():  # ends within a heartbeat (15 s)
            lines.append(line)
    assert "event: end" in lines and any("revoked" in x for x in lines)
    # a malformed credential names the problem
    r = httpx.get(f"{platform.url}/v1/me", headers={"Authorization": "Basic abc"}, timeout=30)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    # an owner sees its own organisation's staff and checkpoints, and no one else's
    r = w.call("POST", "/v1/imports/staff", "owner", content=staff_csv())
    assert r.status_code == 201 and r.json()["outcomes"]["matched"] == 1, r.text
    other_org = (
        f"person_id,name,dob,organisation\n{P2},Trần Thị Bình,1990-01-01,Công ty Khác\n"
    ).encode()
    r = w.call("POST", "/v1/imports/staff", "owner", content=other_org)
    assert r.status_code == 201 and r.json()["outcomes"]["invalid"] == 1, r.text
    staff = w.call("GET", "/v1/organisations/staff", "owner").json()
    assert [s["person_id"] for s in staff["staff"]] == [P1]
    assert staff["staff"][0]["colour"] in ("green", "yellow", "red", "none")
    cps = w.call("GET", "/v1/owner/checkpoints", "owner").json()
    assert {c["checkpoint_id"] for c in cps} == {CP, CP_OTHER}
    stranger = BearerAuth(platform.token("owner", org="Công ty Lạ"))
    r = httpx.put(
        f"{platform.url}/v1/checkpoints/{CP}",
        json={"type": "restaurant", "district": HOME},
        auth=stranger,
        timeout=30,
    )
    assert r.status_code == 403
    assert httpx.get(
        f"{platform.url}/v1/organisations/staff", auth=stranger, timeout=30
    ).json() == {"organisation": "Công ty Lạ", "staff": []}
    r = w.call("POST", "/v1/imports/vaccinations", "owner", content=b"person_id\n")
    assert r.status_code == 403
    # a self check-in needs no credential, only a genuine poster (its signature is the
    # proof of presence): a forged one is refused
    genuine = make_poster_payload(poster_key(platform.settings), CP, datetime.now(VN_TZ).date())
    forged = genuine.replace(f"|{CP}|", f"|{CP_OTHER}|")
    r = w.call("POST", "/v1/checkins", None, json={"poster": forged, "person_id": P1})
    assert r.status_code == 403 and "forged" in r.json()["error"]
    r = w.call("POST", "/v1/checkins", None, json={"poster": genuine, "person_id": P1})
    assert r.status_code == 202 and r.json()["checkpoint_id"] == CP, r.text


def test_a_symptomatic_declaration_flags_the_resident_for_testing(
    platform: Platform, tmp_path: Path
) -> None:
    w = World(platform, tmp_path)
    r = w.call("POST", "/v1/declarations/health", "device", json={"person_id": P1})
    assert r.status_code == 202  # no symptoms, no contact: not flagged
    r = w.call(
        "POST",
        "/v1/declarations/health",
        "official",
        json={
            "person_id": P1,
            "symptoms": ["ho", "sốt"],
            "contact_with_f0": True,
            "declared_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        },
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    flagged: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not flagged:
        flagged = w.call("GET", "/v1/testing/flagged", "official").json()
        time.sleep(0.3)
    assert [f["person_id"] for f in flagged] == [P1]
    assert w.call("GET", "/v1/testing/summary", "epidemiologist").json() == {HOME: 1}
    away = httpx.get(
        f"{platform.url}/v1/testing/flagged",
        auth=BearerAuth(platform.token("official", AWAY)),
        timeout=30,
    )
    assert away.json() == []
    # a negative test after the flag takes P1 off the list and out of the counts
    sampled = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    result = (
        f"person_id,name,dob,result,test_type,sampled_at\n"
        f"{P1},Nguyễn Văn An,1990-01-01,negative,PCR,{sampled}\n"
    )
    r = w.call("POST", "/v1/imports/test-results", "steward", content=result.encode())
    assert r.status_code == 201 and r.json()["outcomes"]["matched"] == 1, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and flagged:
        flagged = w.call("GET", "/v1/testing/flagged", "official").json()
        time.sleep(0.3)
    assert flagged == []
    assert w.call("GET", "/v1/testing/summary", "epidemiologist").json() == {}
