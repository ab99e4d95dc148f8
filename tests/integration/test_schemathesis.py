"""Schemathesis over the live platform's OpenAPI schema: every operation, called with
generated valid and invalid inputs by a caller its access policy lets in (so inputs reach
the route, not just the 401), never answers 5xx. A 5xx is a validation gap or a bug; the
failure names the operation and prints a curl command that reproduces it.

Deterministic (derandomized) and small (a few examples per operation and phase), so it
stays within a couple of minutes on two cores."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error

from api.access import POLICY
from api.app import create_app
from gate.http_auth import DeviceAuth
from infra.settings import Settings
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

DISTRICT = "Ba Đình"
CHECKPOINT = "st-cp-1"
# A route several roles may use is called as the first of these it allows.
PREFERENCE = ("device", "admin", "steward", "epidemiologist", "official", "owner")
CONFIG = {
    "seed": 9,
    "generation": {
        "mode": "all",  # valid and invalid inputs
        # more for a deeper hunt: DANCU_SCHEMATHESIS_EXAMPLES=200 pytest this file
        "max-examples": int(os.environ.get("DANCU_SCHEMATHESIS_EXAMPLES", "25")),
        "with-security-parameters": False,  # the credentials are ours, below
        "database": "none",
    },
    "phases": {"stateful": {"enabled": False}},
    "suppress-health-check": ["all"],
    "request-timeout": 60,
}

Signer = Callable[[Any], Any]


def bearer(token: str) -> Signer:
    """A `requests` auth callable: a person's token (generated auth headers removed)."""

    def auth(request: Any) -> Any:
        for name in ("X-Device-Id", "X-Timestamp", "X-Signature"):
            request.headers.pop(name, None)
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    return auth


def signed(device: DeviceAuth) -> Signer:
    """A `requests` auth callable signing the exact bytes sent, as a device does."""

    def auth(request: Any) -> Any:
        request.headers.pop("Authorization", None)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers.update(device.headers(request.method, request.path_url, body))
        return request

    return auth


class Live:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.url = platform.url
        device = platform.device(CHECKPOINT)
        self.secrets = [device.key]  # never to be seen in a log
        self.signers: dict[str, Signer] = {"device": signed(device)}
        for role in PREFERENCE[1:]:
            token = platform.token(role, DISTRICT if role == "official" else "")
            self.secrets.append(token)
            self.signers[role] = bearer(token)

    def auth_for(self, method: str, path: str) -> Signer | None:
        roles = POLICY.get((method.upper(), path), frozenset())
        for role in PREFERENCE:
            if role in roles:
                return self.signers[role]
        return None  # public, or closed to all (the route's 401/403 is then its answer)


@pytest.fixture(scope="module")
def live(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "dancu"
    platform = Platform(base_settings, data_dir, DANCU_LOG_LEVEL="INFO")  # access lines too
    platform.start()
    try:
        yield Live(platform)
    finally:
        platform.stop()


def load_schema() -> schemathesis.BaseSchema:
    """The schema the app serves, built in this process so pytest can name one test per
    operation at collection; test_the_live_schema_is_the_one_fuzzed checks the live
    platform serves exactly this."""
    config = schemathesis.Config.from_dict(CONFIG)
    loaded = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=config)
    # An event stream never ends: it is not a request/response operation to fuzz.
    return loaded.exclude(path_regex=r".*/stream$")


schema = load_schema()


def test_the_live_schema_is_the_one_fuzzed(live: Live) -> None:
    served = httpx.get(f"{live.url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == create_app(Settings()).openapi()


@schema.parametrize()
@settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case: schemathesis.Case, live: Live) -> None:
    auth = live.auth_for(case.method, case.operation.path)
    case.call_and_validate(base_url=live.url, checks=[not_a_server_error], auth=auth)


def test_the_platform_counted_the_calls_and_no_5xx(live: Live) -> None:
    """The server's own view of the run above (this module's tests run in file order),
    from GET /metrics: the calls reached the routes, and none was answered 5xx
    (``/healthz`` says 503 while the platform starts: that is its job)."""
    token = (live.platform.settings.data_dir / "metrics.token").read_text().strip()
    for _ in range(5):  # a scrape gives each source 3 s: a busy machine may need another
        r = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        calls: dict[tuple[str, str, str], float] = {}
        live_figures: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name in ("dancu_metrics_source_up", "dancu_consumer_lag"):
                    label = sample.labels.get("source") or sample.labels["topic"]
                    live_figures[sample.name, label] = sample.value
                if sample.name == "dancu_http_requests_total" and sample.value:
                    labels = sample.labels
                    calls[labels["method"], labels["route"], labels["status"]] = sample.value
        if live_figures.get(("dancu_metrics_source_up", "kafka")) == 1:
            break
        time.sleep(2)
    # Kafka and Redis answered the scrape; the worker's lag is read from Kafka
    assert live_figures["dancu_metrics_source_up", "kafka"] == 1
    assert live_figures["dancu_metrics_source_up", "redis"] == 1
    assert ("dancu_consumer_lag", "scans") in live_figures
    errors = {k: n for k, n in calls.items() if k[2].startswith("5") and k[1] != "/healthz"}
    assert not errors
    operations = {(m, route) for m, route, _ in calls}
    operations_fuzzed = (result.ok() for result in schema.get_all_operations())
    served = {(op.method.upper(), op.path) for op in operations_fuzzed}
    assert served <= operations, f"never called: {sorted(served - operations)}"
    answered = {(m, route) for m, route, status in calls if not status.startswith(("401", "403"))}
    assert len(answered & served) >= len(served) // 2, "most calls stopped at the access check"


def test_the_logs_are_json_lines_with_request_ids_and_no_credentials(live: Live) -> None:
    """Every process's logs after the run: one JSON object per log line (the CLI's banner
    aside), an access line with a request ID per call, and none of the run's tokens or
    device key anywhere."""
    data_dir = live.platform.settings.data_dir
    logs = sorted((data_dir / "logs").glob("*.log"))  # store.log, worker-1.log, …
    assert {"store.log", "worker-1.log"} <= {p.name for p in logs}
    texts = [live.platform.log.read_text(), *(p.read_text() for p in logs)]
    access = 0
    for text in texts:
        for secret in live.secrets:
            assert secret not in text
        for raw in text.splitlines():
            if not raw.startswith("{"):  # the CLI's banner, printed for a person
                continue
            line = orjson.loads(raw)
            assert {"ts", "level", "logger", "msg"} <= set(line), raw
            if line["logger"] == "dancu.access":
                access += 1
                assert line["request_id"], raw
                assert line["route"].startswith(("/", "<")) and "?" not in line["route"], raw
    assert access >= 100
