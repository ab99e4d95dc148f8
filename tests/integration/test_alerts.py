"""Alerts on the real platform: an F0 report reaches its officials over Server-Sent Events
(their district only, resumable with Last-Event-ID), the owner of a visited checkpoint gets
counts without names, officials acknowledge and follow up, and a webhook that fails at
first, or whose platform is stopped mid-delivery, ends with every alert exactly once."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from infra.webhooks import signature_ok
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

HOME, AWAY = "Ba Đình", "Hoàn Kiếm"
ORG = "Cửa hàng Hoa"
NAMES = ["A", "B", "C", "D", "G", "H"]
IDS = {n: f"0010900002{i:02d}" for i, n in enumerate(NAMES)}
T0 = (datetime.now(UTC) - timedelta(hours=12)).replace(second=0, microsecond=0)
REPORTED = T0 + timedelta(hours=10)


def residents_csv() -> str:
    lines = ["id,name,dob,gender,address,district,ward,household_id"]
    for n, pid in IDS.items():
        home = "HA" if n in ("A", "H") else f"H{n}"
        district, ward = (AWAY, "Phường Hàng Bạc") if n == "D" else (HOME, "Phường Kim Mã")
        lines.append(f"{pid},Nguyễn Văn {n},1990-01-01,Nam,Số 1,{district},{ward},{home}")
    return "\n".join(lines) + "\n"


def scan(name: str, cp: str, start: int, end: int) -> dict[str, object]:
    return {
        "scan_id": f"al-{name}-{cp}-{start}",
        "person_id": IDS[name],
        "checkpoint_id": cp,
        "ts": (T0 + timedelta(minutes=start)).isoformat(),
        "t_out": (T0 + timedelta(minutes=end)).isoformat(),
        "source": "gate",
    }


SCANS = [
    scan("A", "al-shop", 0, 60),  # the F0, at the owner's shop
    scan("B", "al-shop", 46, 90),  # 14 minutes with A: not F1; F2 through C
    scan("C", "al-shop", 45, 90),  # F1 (home district)
    scan("D", "al-shop", 44, 120),  # F1 (the other district)
    scan("C", "al-gate", 180, 240),
    scan("G", "al-gate", 190, 240),  # F2 through C
]
# Who each district's officials hear about: H is A's household (F1).
HOME_PEOPLE = {IDS["B"], IDS["C"], IDS["G"], IDS["H"]}


def report(report_id: str) -> dict[str, object]:
    return {
        "report_id": report_id,
        "person_id": IDS["A"],
        "sample_time": (T0 + timedelta(hours=5)).isoformat(),
        "symptomatic": False,
        "reported_at": REPORTED.isoformat(),
    }


def half_hours(start: datetime, end: datetime) -> tuple[str, str]:
    """A slot as an owner sees it: rounded out to the half hour."""
    lo = start.replace(minute=start.minute - start.minute % 30)
    hi = end.replace(minute=end.minute - end.minute % 30)
    if hi < end:
        hi += timedelta(minutes=30)
    return lo.isoformat(), hi.isoformat()


def wait_for(fetch: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if check(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {value!r}"[:3000])


class SSE:
    """An alert stream read in a thread: each event as (id, event, data)."""

    def __init__(
        self,
        p: Platform,
        auth: httpx.Auth | None,
        resume_header: str | None = None,
        resume_query: str | None = None,
    ) -> None:
        self.events: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self.comments: list[str] = []
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.client = httpx.Client(base_url=p.url, auth=auth, timeout=httpx.Timeout(10, read=60))
        headers = {"Last-Event-ID": resume_header} if resume_header else {}
        params = {"last_event_id": resume_query} if resume_query else {}
        self.thread = threading.Thread(target=self._read, args=(headers, params), daemon=True)
        self.thread.start()
        assert self.connected.wait(30), f"the stream did not open: {self.error!r}"

    def _read(self, headers: dict[str, str], params: dict[str, str]) -> None:
        try:
            with self.client.stream(
                "GET", "/v1/alerts/stream", headers=headers, params=params
            ) as r:
                assert r.status_code == 200, r.read()
                assert r.headers["content-type"].startswith("text/event-stream")
                current: dict[str, str] = {}
                for line in r.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                        self.connected.set()
                    elif not line:
                        if "data" in current:
                            data = orjson.loads(current["data"])
                            self.events.put((current.get("id", ""), current["event"], data))
                        current = {}
                    else:
                        field, _, value = line.partition(":")
                        current[field] = value.removeprefix(" ")
        except BaseException as exc:  # closed by the test, or a failure the test reports
            self.error = exc
        finally:
            self.ended.set()
            self.connected.set()

    def take(self, until: Callable[[list[tuple[str, str, dict[str, Any]]]], bool]) -> list[Any]:
        got: list[tuple[str, str, dict[str, Any]]] = []
        deadline = time.monotonic() + 90
        while not until(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream: not reached in 90 s: {got!r}"[:3000])
            with contextlib.suppress(queue.Empty):
                got.append(self.events.get(timeout=min(left, 1)))
        return got

    def close(self) -> None:
        self.client.close()
        self.thread.join(10)


def flagged_people(events: list[Any]) -> set[str]:
    return {e[2]["alert"]["person_id"] for e in events if e[2]["change"] in ("flagged", "updated")}


class Receiver:
    """A webhook receiver on 127.0.0.1: fails ``fail_first`` times, optionally slowly, then
    acknowledges; records every request and every event it acknowledged."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.fail_first = 0
        self.delay = 0.0
        self.requests: list[str] = []
        self.acked: list[str] = []
        self.bad_signatures = 0
        self.in_flight = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = self.headers["X-Dancu-Event-Id"]
                with receiver.lock:
                    receiver.requests.append(event_id)
                    if not signature_ok(receiver.secret, body, self.headers["X-Dancu-Signature"]):
                        receiver.bad_signatures += 1
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= failing
                receiver.in_flight.set()
                time.sleep(receiver.delay)
                if failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                if orjson.loads(body)["event_id"] != event_id:
                    receiver.bad_signatures += 1  # a body that is not the event it names
                self.send_response(204)
                self.end_headers()
                with receiver.lock:
                    receiver.acked.append(event_id)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def stream_ids(official: httpx.Client, after: str) -> list[str]:
    """Every event ID of the official's district after ``after`` (the events a webhook
    registered then must get), read from the stream with a resume point."""
    ids: list[str] = []
    with official.stream(
        "GET", "/v1/alerts/stream", params={"last_event_id": after}, timeout=30
    ) as r:
        last = official.get("/v1/alerts").json()["last_event_id"]
        if last == after:
            return []
        for line in r.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if ids[-1] == last:
                    return ids
    raise AssertionError("the stream ended early")


def prepare(p: Platform, tmp: Path) -> dict[str, httpx.Client]:
    (tmp / "residents.csv").write_text(residents_csv(), encoding="utf-8")
    loaded = p.run_cli("import", "residents", str(tmp / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr
    p.start()
    owner = httpx.Client(base_url=p.url, auth=p.auth("owner", org=ORG), timeout=60)
    r = owner.post(
        "/v1/checkpoints",
        json=[{"checkpoint_id": "al-shop", "name": "Hoa", "type": "shop", "district": HOME}],
    )
    assert r.status_code == 201, r.text
    admin = p.client("admin")
    r = admin.post(
        "/v1/checkpoints", json=[{"checkpoint_id": "al-gate", "type": "gate", "district": HOME}]
    )
    assert r.status_code == 201, r.text
    device = httpx.Client(base_url=p.url, auth=p.device("al-shop", "al-gate"), timeout=60)
    r = device.post("/v1/scans", json=SCANS)
    assert r.status_code == 202, r.text
    p.wait_processed(len(SCANS))
    return {
        "owner": owner,
        "home": p.client("official", HOME),
        "away": p.client("official", AWAY),
        "other_owner": httpx.Client(
            base_url=p.url, auth=p.auth("owner", org="Công ty Khác"), timeout=60
        ),
    }


def test_alerts_reach_officials_and_owners(platform: Platform, tmp_path: Path) -> None:
    c = prepare(platform, tmp_path)
    home_auth = c["home"].auth
    live = SSE(platform, home_auth)
    owner_live = SSE(platform, c["owner"].auth)
    try:
        r = c["home"].post("/v1/reports/f0", json=report("al-r1"))
        assert r.status_code == 202, r.text
        got = live.take(lambda es: flagged_people(es) >= HOME_PEOPLE)
        assert flagged_people(got) == HOME_PEOPLE  # never D, who lives in the other district
        assert all(e[1] == "alert" and e[0] == e[2]["event_id"] for e in got)
        by_person = {e[2]["alert"]["person_id"]: e[2]["alert"] for e in got}
        assert by_person[IDS["C"]]["tier"] == "F1"
        assert by_person[IDS["C"]]["name"] == "Nguyễn Văn C"
        assert by_person[IDS["C"]]["checkpoint_id"] == "al-shop"
        assert by_person[IDS["H"]]["reason"] == "household"
        assert by_person[IDS["G"]]["tier"] == "F2"
        assert "person_key" not in by_person[IDS["C"]]

        # The owner: the shop, the slot, two visitors flagged (C and D) and nobody named.
        (venue,) = owner_live.take(lambda es: len(es) >= 1)
        alert = venue[2]["alert"]
        assert venue[2]["change"] == "flagged" and alert["kind"] == "venue"
        assert alert["checkpoint_id"] == "al-shop" and alert["visitors_flagged"] == 2
        (slot,) = alert["slots"]
        assert (slot["start"], slot["end"]) == half_hours(T0, T0 + timedelta(hours=1))
        text = orjson.dumps(c["owner"].get("/v1/alerts").json()).decode() + str(venue)
        assert not any(pid in text or f"Văn {n}" in text for n, pid in IDS.items())
        assert c["other_owner"].get("/v1/alerts").json()["alerts"] == []

        # The other district's officials hear about D only (D's flag may travel on another
        # partition than those waited for above).
        away = wait_for(
            lambda: c["away"].get("/v1/alerts").json(), lambda got: len(got["alerts"]) >= 1
        )
        assert [a["person_id"] for a in away["alerts"]] == [IDS["D"]]
        listed = c["home"].get("/v1/alerts").json()
        assert {a["person_id"] for a in listed["alerts"]} == HOME_PEOPLE
        assert listed["counts"]["open"] == len(HOME_PEOPLE)

        # Acknowledge and follow up: the home district's officials only.
        alert_c = by_person[IDS["C"]]["alert_id"]
        assert c["away"].post(f"/v1/alerts/{alert_c}/ack").status_code == 403
        assert c["owner"].post(f"/v1/alerts/{alert_c}/ack").status_code == 403
        assert c["away"].get(f"/v1/alerts/{alert_c}").status_code == 403
        acked = c["home"].post(f"/v1/alerts/{alert_c}/ack")
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
        bad = c["home"].post(f"/v1/alerts/{alert_c}/followup", json={"action": "result"})
        assert bad.status_code == 422 and "result" in bad.json()["error"]
        for step in ({"action": "contacted", "note": "gọi điện"}, {"action": "tested"}):
            r = c["home"].post(f"/v1/alerts/{alert_c}/followup", json=step)
            assert r.status_code == 200 and r.json()["status"] == "acknowledged", r.text
        r = c["home"].post(
            f"/v1/alerts/{alert_c}/followup", json={"action": "result", "result": "negative"}
        )
        assert r.status_code == 200 and r.json()["status"] == "closed"
        assert [(h["change"], h.get("action")) for h in r.json()["history"]][-4:] == [
            ("acknowledged", None),
            ("followup", "contacted"),
            ("followup", "tested"),
            ("followup", "result"),
        ]
        closed = c["home"].get("/v1/alerts", params={"status": "closed"}).json()
        assert [a["alert_id"] for a in closed["alerts"]] == [alert_c]
        steps = live.take(lambda es: sum(e[2]["change"] != "updated" for e in es) >= 4)
        assert [
            (e[2]["change"], e[2]["alert"]["status"]) for e in steps if e[2]["change"] != "updated"
        ] == [
            ("acknowledged", "acknowledged"),
            ("followup", "acknowledged"),
            ("followup", "acknowledged"),
            ("followup", "closed"),
        ]

        # Resume (Last-Event-ID): from the second event on, exactly what came after it.
        ids = stream_ids(c["home"], "0-0")
        assert [e[0] for e in got + steps] == ids  # the live stream missed nothing either
        again = SSE(platform, home_auth, resume_header=ids[1])
        try:
            rest = again.take(lambda es: len(es) >= len(ids) - 2)
            assert [e[0] for e in rest] == ids[2:]
            time.sleep(1)
            assert again.events.empty()  # and nothing else
        finally:
            again.close()

        # The audit names the official who was shown the people on the stream.
        me = c["home"].get("/v1/me").json()["name"]
        seen = wait_for(
            lambda: (
                platform.client("admin")
                .get("/v1/audit", params={"actor": me, "person_id": IDS["G"]})
                .json()
            ),
            lambda entries: any(e["action"] == "alerts-stream" for e in entries),
        )
        assert seen

        # A withdrawal reaches everyone who was told.
        assert c["home"].delete("/v1/reports/f0/al-r1").status_code == 202
        gone = live.take(
            lambda es: (
                {e[2]["alert"]["person_id"] for e in es if e[2]["change"] == "withdrawn"}
                >= HOME_PEOPLE
            )
        )
        assert all(e[2]["alert"]["status"] == "withdrawn" for e in gone)
        (venue_gone,) = owner_live.take(lambda es: len(es) >= 1)
        assert venue_gone[2]["change"] == "withdrawn"
        withdrawn = c["home"].post(f"/v1/alerts/{alert_c}/ack")
        assert withdrawn.status_code == 409 and "withdrawn" in withdrawn.json()["error"]
    finally:
        live.close()
        owner_live.close()


def test_resume_by_query_parameter(platform: Platform, tmp_path: Path) -> None:
    c = prepare(platform, tmp_path)
    start = c["home"].get("/v1/alerts").json()["last_event_id"]
    refused = c["home"].get("/v1/alerts/stream", params={"last_event_id": "x"})
    assert refused.status_code == 422 and "last_event_id" in refused.text
    assert c["home"].post("/v1/reports/f0", json=report("al-q1")).status_code == 202
    wait_for(
        lambda: c["home"].get("/v1/alerts").json()["alerts"],
        lambda alerts: {a["person_id"] for a in alerts} >= HOME_PEOPLE,
    )
    by_query = stream_ids(c["home"], start)
    assert len(by_query) >= len(HOME_PEOPLE)
    by_header = SSE(platform, c["home"].auth, resume_header=start)
    try:
        assert [e[0] for e in by_header.take(lambda es: len(es) >= len(by_query))] == by_query
    finally:
        by_header.close()


def test_webhooks_deliver_each_alert_once_across_failures_and_restarts(
    base_settings: Any, tmp_path: Path
) -> None:
    platform = Platform(base_settings, tmp_path / "dancu", DANCU_WEBHOOK_RETRY_BASE="0.2")
    receiver = Receiver()
    try:
        c = prepare(platform, tmp_path)
        home = c["home"]
        assert home.post("/v1/webhooks", json={"url": "http://10.1.2.3/x"}).status_code == 422
        assert home.post("/v1/webhooks", json={"url": "file:///etc/passwd"}).status_code == 422
        r = home.post("/v1/webhooks", json={"url": receiver.url, "description": "phường"})
        assert r.status_code == 201, r.text
        hook = r.json()
        receiver.secret = hook["secret"]
        start = hook["last_event_id"]
        assert "secret" not in str(home.get("/v1/webhooks").json())
        assert c["away"].delete(f"/v1/webhooks/{hook['webhook_id']}").status_code == 403
        assert c["owner"].get("/v1/webhooks").json() == []

        # The receiver fails its first three answers, then acknowledges.
        receiver.fail_first = 3
        assert home.post("/v1/reports/f0", json=report("al-w1")).status_code == 202
        wait_for(
            lambda: home.get("/v1/alerts").json()["alerts"],
            lambda alerts: {a["person_id"] for a in alerts} >= HOME_PEOPLE,
        )
        acked, expected = wait_for(
            lambda: (list(receiver.acked), stream_ids(home, start)), lambda x: x[0] == x[1]
        )
        assert acked == expected  # in order, each once
        assert receiver.requests[:4] == [expected[0]] * 4  # three failures, then the ack
        assert receiver.bad_signatures == 0
        (listed,) = home.get("/v1/webhooks").json()
        assert listed["delivered"] == len(expected) and listed["last_event_id"] == expected[-1]

        # Stopped while a delivery is in flight (a slow receiver), then restarted: the
        # events of a withdrawal all arrive, none twice to the receiver that acknowledged.
        receiver.delay = 1.0
        receiver.in_flight.clear()
        before = len(receiver.acked)
        assert home.delete("/v1/reports/f0/al-w1").status_code == 202
        assert receiver.in_flight.wait(60)
        platform.stop()
        stopped_at = len(receiver.acked)
        receiver.delay = 0.0
        receiver.fail_first = 2  # and down a little after the restart too
        platform.start()
        home = platform.client("official", HOME)
        withdrawn = wait_for(
            lambda: home.get("/v1/alerts", params={"status": "withdrawn"}).json()["alerts"],
            lambda alerts: {a["person_id"] for a in alerts} >= HOME_PEOPLE,
        )
        assert withdrawn
        acked, expected = wait_for(
            lambda: (list(receiver.acked), stream_ids(home, start)), lambda x: x[0] == x[1]
        )
        time.sleep(2)  # anything sent twice would arrive now
        assert receiver.acked == expected, (before, stopped_at)
        assert len(set(receiver.acked)) == len(receiver.acked)
        assert stopped_at > before  # the delivery in flight at the stop was acknowledged

        assert home.delete(f"/v1/webhooks/{hook['webhook_id']}").status_code == 204
        assert home.get("/v1/webhooks").json() == []
    finally:
        receiver.close()
        platform.stop()
