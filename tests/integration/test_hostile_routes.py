"""Every route of the OpenAPI schema, fed hostile bodies, parameters and path values on
the real platform: never a 5xx, always a short JSON error (no echo of a huge value)."""

from __future__ import annotations

import re

import httpx
import pytest

from api.access import POLICY, SELF_SIGNED
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

BIG = "9" * 50_000
HOSTILE_BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'"text"',
    b"123",
    b"{oops",
    b"[" * 5000 + b"]" * 5000,
    b'{"a": ' * 2000 + b"1" + b"}" * 2000,
    ('{"checkpoint_id": "' + BIG + '"}').encode(),
    '{"person_id": "٠٠١٠٩٠١٢٣٤٥٦", "checkpoint_id": "cp1"}'.encode(),
    b'{"person_id": "001090123456\\n", "checkpoint_id": "cp1"}',
    b'{"scan_id": "s", "person_id": "001090123456", "checkpoint_id": "c", '
    b'"ts": "9999-12-31T23:59:59+00:00", "source": "gate"}',
    b'{"scan_id": "s", "person_id": "001090123456", "checkpoint_id": "c", '
    b'"ts": -62135596800, "source": "gate"}',
    b'[{"checkpoint_id": "cp\\u0000", "district": "<script>alert(1)</script>"}]',
    b'{"decision": ["accept"]}',
    "id,name\n١,٢\n".encode(),
    b"\xff\xfe\x00garbage",
]
HOSTILE_PATH_VALUES = ["..%2F..%2Fetc%2Fpasswd", "x" * 3000, "%00", "١٢٣", "imp-../../x"]
HOSTILE_QUERY = {
    "limit": "-1",
    "outcome": "<b>",
    "filename": "f" * 500,
    "f0": "../" * 60,
    "since": "yesterday",
    "until": "2021-13-40",
}


def _paths(platform: Platform) -> list[tuple[str, str]]:
    schema = httpx.get(f"{platform.url}/openapi.json", timeout=10).json()
    return [
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "delete", "patch")
    ]


def _callers(platform: Platform) -> dict[str, httpx.Auth]:
    """One caller of each role; the device stands for the checkpoints the hostile bodies
    and paths name, so its requests get past the checkpoint check."""
    people = {
        role: platform.auth(role, "Ba Đình" if role == "official" else "")
        for role in ("official", "epidemiologist", "steward", "owner", "admin")
    }
    return {**people, "device": platform.device("cp1", "c", "vaccinations")}


def _ask(client: httpx.Client, method: str, url: str, **kw: object) -> httpx.Response:
    """One request; the body of a successful answer is left unread (an event stream, such
    as the alerts', never ends)."""
    with client.stream(method, url, **kw) as r:  # type: ignore[arg-type]
        if r.status_code >= 400:
            r.read()
    return r


def _check(r: httpx.Response, what: str, failures: list[str]) -> None:
    if r.status_code == 401:  # every caller here holds valid credentials
        failures.append(f"{what} → 401: {r.text[:200]}")
    elif r.status_code >= 500:
        failures.append(f"{what} → {r.status_code}: {r.text[:200]}")
    elif r.status_code >= 400:
        if len(r.content) > 20_000:
            failures.append(f"{what} → {r.status_code} with a {len(r.content)}-byte answer")
        elif not isinstance(r.json().get("error"), str) or not r.json()["error"]:
            failures.append(f"{what} → {r.status_code} without an error message")


def test_no_route_answers_hostile_input_with_a_5xx(platform: Platform) -> None:
    platform.start()
    failures: list[str] = []
    routes = _paths(platform)
    assert len(routes) >= 15, routes
    callers = _callers(platform)
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        for method, path in routes:
            if path == "/v1/admin/rebuild":
                continue  # takes no input
            # every role the route admits (the input reaches the route), else an admin (403)
            roles = sorted(POLICY.get((method, path), {"admin"}))
            concrete = re.sub(r"\{[^}]+\}", "vaccinations", path)
            for role in roles:
                for body in HOSTILE_BODIES if method in ("POST", "PUT", "PATCH") else [b""]:
                    r = _ask(
                        client,
                        method,
                        concrete,
                        content=body,
                        params=HOSTILE_QUERY,
                        headers={"content-type": "application/json"},
                        auth=callers[role],
                    )
                    _check(r, f"{role}: {method} {concrete} body={body[:40]!r}", failures)
                for value in HOSTILE_PATH_VALUES if "{" in path else []:
                    hostile = re.sub(r"\{[^}]+\}", value, path)
                    r = _ask(client, method, hostile, content=b"{}", auth=callers[role])
                    _check(r, f"{role}: {method} {hostile[:80]}", failures)
    assert not failures, "\n".join(failures[:30])


def test_every_route_but_the_public_ones_needs_credentials(platform: Platform) -> None:
    platform.start()
    routes = [(m, p) for m, p in _paths(platform) if p.startswith("/v1/")]
    assert len(routes) >= 15, routes
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        for method, path in routes:
            concrete = re.sub(r"\{[^}]+\}", "vaccinations", path)
            r = _ask(client, method, concrete, content=b"{}")
            if (method, path) in SELF_SIGNED:  # no credential needed: the body is the proof
                assert r.status_code == 422, f"{method} {concrete} → {r.status_code}: {r.text}"
            else:
                assert r.status_code == 401, f"{method} {concrete} → {r.status_code}: {r.text}"
                assert "credentials required" in r.json()["error"]
            r = _ask(
                client,
                method,
                concrete,
                content=b"{}",
                headers={"Authorization": "Bearer dcu_nope"},
            )
            assert r.status_code == 401 and "unknown" in r.json()["error"], (method, path)


def test_hostile_fields_are_named_in_the_error(platform: Platform) -> None:
    platform.start()
    device, steward = platform.as_device("cp1"), platform.api("steward")
    official = platform.api("official", "Ba Đình")
    r = device.post("/v1/gate/check", json={"checkpoint_id": "cp1", "person_id": "٠" * 12})
    assert r.status_code == 422 and "person_id" in r.json()["error"]
    r = official.get("/v1/residents/00109012345%0A/status")
    assert r.status_code == 422 and "12 digits" in r.json()["error"]
    r = steward.post(
        "/v1/checkpoints",
        json=[{"checkpoint_id": "cp-x", "district": "<img src=x onerror=alert(1)>"}],
    )
    assert r.status_code == 422 and "district" in r.json()["error"]
    qr = "001090123456|012345678|Nguyễn Văn An|15031990|Nam|Số 12, Kim Mã, Ba Đình|10052021"
    r = device.post(
        "/v1/gate/check",
        json={"checkpoint_id": "cp1", "qr": qr, "person_id": "001190654321"},
    )
    assert r.status_code == 422 and "different people" in r.json()["error"]
    r = steward.post(
        "/v1/imports/vaccinations",
        content=b"person_id,name,dob,dose,vaccine,date\n"
        b"001090123456,An,9999-01-01,1,AZ,0001-01-01\n"
        b"001090123456,An,1990-03-15,1,AZ," + b"x" * 200_000 + b"\n",
    )
    assert r.status_code == 201, r.text
    rows = steward.get(f"/v1/imports/{r.json()['import_id']}/records").text.splitlines()
    assert len(rows) == 2 and all('"invalid"' in x for x in rows)
    assert "future" in rows[0] and "field larger" in rows[1]


def test_checkpoints_change_only_by_an_explicit_update(platform: Platform) -> None:
    platform.start()
    steward = platform.api("steward")
    hospital = {"checkpoint_id": "HN-h1", "type": "hospital", "district": "Ba Đình"}
    assert steward.post("/v1/checkpoints", json=[hospital]).status_code == 201
    again = steward.post("/v1/checkpoints", json=[hospital])
    assert again.status_code == 201 and again.json() == {"registered": 0, "unchanged": 1}
    r = steward.post("/v1/checkpoints", json=[{**hospital, "type": "restaurant"}])
    assert r.status_code == 409 and "HN-h1" in r.json()["error"]
    converted = {"type": "restaurant", "district": "Ba Đình"}
    # a business changes only its own checkpoints; an official changes none
    r = platform.api("owner").put("/v1/checkpoints/HN-h1", json=converted)
    assert r.status_code == 403 and "HN-h1" in r.json()["error"]
    assert platform.api("official", "Ba Đình").put("/v1/checkpoints/HN-h1").status_code == 403
    r = steward.put(
        "/v1/checkpoints/HN-h1", json=converted, headers={"X-Purpose": "premises converted"}
    )
    assert r.status_code == 200 and r.json()["changed"] == ["type"]
    assert steward.put("/v1/checkpoints/nope", json=hospital).status_code == 404
    # the change is audited under the steward's name and role, with the stated purpose
    name = steward.get("/v1/me").json()["name"]
    (entry,) = platform.api("admin").get("/v1/audit", params={"actor": name}).json()
    assert (entry["role"], entry["route"], entry["action"], entry["why"]) == (
        "steward",
        "PUT /v1/checkpoints/{checkpoint_id}",
        "checkpoint-update",
        "premises converted",
    )
    assert entry["subject"] == "HN-h1: type hospital→restaurant"


def test_every_audited_read_reaches_the_full_log_in_clickhouse(platform: Platform) -> None:
    platform.start()
    official, admin = platform.api("official", "Ba Đình"), platform.api("admin")
    for _ in range(3):
        official.get("/v1/residents/001090123456/status", headers={"X-Purpose": "contact tracing"})
    entries = admin.get("/v1/audit", params={"limit": 10}).json()
    name = official.get("/v1/me").json()["name"]
    mine = [e for e in entries if e["actor"] == name]
    assert len(mine) == 3 and all(e["why"] == "contact tracing" for e in mine)
    assert all(
        e["role"] == "official"
        and e["route"] == "GET /v1/residents/{person_id}/status"
        and e["people_count"] == 1
        and e["people"] == [e["person_key"]]
        and e["person_key"]
        for e in mine
    ), mine
    assert all("001090123456" not in str(e) for e in entries)  # pseudonyms only
    # found again by the person they named (the admin gives the ID, the log holds none)
    about = admin.get("/v1/audit", params={"person_id": "001090123456"}).json()
    assert sorted(e["entry_id"] for e in about) == sorted(e["entry_id"] for e in mine)
    assert admin.get("/v1/audit", params={"actor": name}).json() == mine
    # the log is for admins only
    assert official.get("/v1/audit").status_code == 403
