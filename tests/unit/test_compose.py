"""docker-compose.yml stays structurally valid (no Docker engine here to run it)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_are_healthchecked_and_ordered() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "clickhouse", "worker", "api"} <= set(services)
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no healthcheck"
    for name in ("worker", "api"):
        deps = services[name]["depends_on"]
        assert {d: c["condition"] for d, c in deps.items()} == {
            "kafka": "service_healthy",
            "redis": "service_healthy",
            "clickhouse": "service_healthy",
        }
        env = services[name]["environment"]
        assert {"KAFKA_BOOTSTRAP", "REDIS_URL", "CLICKHOUSE_URL"} <= set(env)
