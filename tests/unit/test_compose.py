"""docker-compose.yml stays structurally valid (no Docker engine here to run it)."""

import os
import re
import shutil
import subprocess
import tomllib
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from infra.services import MESSAGE_MAX_BYTES, REDIS_MEMORY_ARGS

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_are_healthchecked_and_ordered() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "redis", "clickhouse", "worker", "api"} <= set(
        services
    )
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no healthcheck"
    for name in ("worker", "api"):
        deps = services[name]["depends_on"]
        assert {d: c["condition"] for d, c in deps.items()} == {
            "kafka-1": "service_healthy",
            "kafka-2": "service_healthy",
            "kafka-3": "service_healthy",
            "redis": "service_healthy",
            "clickhouse": "service_healthy",
        }
        env = services[name]["environment"]
        assert {"KAFKA_BOOTSTRAP", "REDIS_URL", "CLICKHOUSE_URL"} <= set(env)
        assert (env["KAFKA_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
    brokers = [services[f"kafka-{i}"]["environment"] for i in (1, 2, 3)]
    assert all(b["KAFKA_MESSAGE_MAX_BYTES"] == MESSAGE_MAX_BYTES for b in brokers)
    assert all(b["KAFKA_MIN_INSYNC_REPLICAS"] == 2 for b in brokers)
    redis_args = [str(a) for a in services["redis"]["command"]]
    assert _flags(REDIS_MEMORY_ARGS).items() <= _flags(redis_args).items()


def test_the_image_copies_every_package_the_distribution_lists() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    top = {p.split(".")[0] for p in packages}
    copied = {
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert top <= copied, f"Dockerfile does not copy {sorted(top - copied)}"


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.national.yml"])
def test_compose_file_validates_with_docker_compose(name: str) -> None:
    """Debian's docker-compose (v1) validates the file offline (`make test` installs it)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("docker-compose is missing under CI (make test installs it)")
        pytest.skip("docker-compose is not installed")
    secrets = {
        "DANCU_PSEUDONYM_SECRET": "compose-validation-secret",
        "CLICKHOUSE_PASSWORD": "compose-validation-password",
        "DANCU_METRICS_TOKEN": "compose-validation-metrics-token",
    }
    result = subprocess.run(
        [binary, "-f", str(ROOT / name), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, **secrets},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _flags(args: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line."""
    return {a: b for a, b in pairwise(args) if a.startswith("--")}


def test_national_compose_has_the_plans_shape() -> None:
    """docker-compose.national.yml (docs/capacity.md): dedicated KRaft controllers and
    brokers with the cluster's replication, a Redis Cluster whose every node runs the
    project's memory settings, and every dancu role on all of it."""
    compose = yaml.safe_load((ROOT / "docker-compose.national.yml").read_text())
    services = compose["services"]
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no healthcheck"
    controllers = {n: s for n, s in services.items() if n.startswith("kafka-controller-")}
    brokers = {n: s for n, s in services.items() if re.fullmatch(r"kafka-\d+", n)}
    redis = {n: s for n, s in services.items() if re.fullmatch(r"redis-\d+", n)}
    assert len(controllers) == 3
    assert len(brokers) >= 3
    assert len(redis) >= 6 and len(redis) % 2 == 0  # masters, each with a replica
    voters = {c["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for c in controllers.values()}
    assert len(voters) == 1
    for spec in controllers.values():
        assert spec["environment"]["KAFKA_PROCESS_ROLES"] == "controller"
    ids = [b["environment"]["KAFKA_NODE_ID"] for b in (*controllers.values(), *brokers.values())]
    assert len(set(ids)) == len(ids), "KRaft node ids must be unique"
    for name, spec in brokers.items():
        env = spec["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_MESSAGE_MAX_BYTES"] == MESSAGE_MAX_BYTES
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
    for name, spec in redis.items():
        args = [str(a) for a in (*spec["entrypoint"], *spec["command"])]
        flags = _flags(args)
        assert flags["--cluster-enabled"] == "yes"
        assert flags["--cluster-announce-hostname"] == name
        assert flags["--maxmemory-policy"] == "noeviction"
        assert _flags(REDIS_MEMORY_ARGS).items() <= flags.items(), name
    init = services["redis-cluster"]["command"][-1]
    assert all(f"{n}:6379" in init for n in redis), "the cluster is created from every node"
    assert "--cluster-replicas 1" in init
    for role in ("worker", "sink", "api"):
        spec = services[role]
        env = spec["environment"]
        assert set(spec["depends_on"]) == {*brokers, "redis-cluster", "clickhouse"}
        assert all(d["condition"] == "service_healthy" for d in spec["depends_on"].values())
        seeds = env["REDIS_URL"].removeprefix("redis+cluster://").split(",")
        assert env["REDIS_URL"].startswith("redis+cluster://") and seeds
        assert {s.split(":")[0] for s in seeds} <= set(redis)
        assert set(env["KAFKA_BOOTSTRAP"].split(",")) == {f"{b}:9092" for b in brokers}
        assert env["KAFKA_PARTITIONS"] == brokers["kafka-1"]["environment"]["KAFKA_NUM_PARTITIONS"]
        assert (env["KAFKA_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
        assert spec["deploy"]["replicas"] >= 2
