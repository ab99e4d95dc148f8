import stat
from pathlib import Path

import pytest

from infra.secrets import pseudonym_key
from infra.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP", "REDIS_URL", "CLICKHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.redis_url.startswith("redis://127.0.0.1:16379")
    assert s.embedded_clickhouse and s.clickhouse_url.startswith("chdb:///")


def test_external_services_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123")
    s = Settings()
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.redis_url == "redis://r:6379/1"
    assert not s.embedded_clickhouse


def test_production_refuses_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DANCU_ENV", "production")
    monkeypatch.delenv("DANCU_PSEUDONYM_SECRET", raising=False)
    with pytest.raises(ValueError, match="DANCU_PSEUDONYM_SECRET"):
        Settings()


def test_topic_prefix() -> None:
    assert Settings(topic_prefix="t1-").topic("scans") == "t1-scans"


def test_development_key_is_random_per_data_dir_private_and_stable(tmp_path: Path) -> None:
    a, b = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "b")
    key_a = pseudonym_key(a)
    assert len(key_a) >= 32 and key_a == pseudonym_key(a) != pseudonym_key(b)
    assert stat.S_IMODE((tmp_path / "a" / "pseudonym.key").stat().st_mode) == 0o600
    given = Settings(data_dir=tmp_path / "c", pseudonym_secret="s" * 20)  # type: ignore[arg-type]
    assert pseudonym_key(given) == b"s" * 20


def test_no_pseudonym_secret_constant_in_the_source() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "infra").rglob("*.py"):
        assert "do-not-use" not in path.read_text("utf-8"), path


def test_one_embedded_broker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP", "KAFKA_BROKERS", "KAFKA_REPLICATION_FACTOR", "KAFKA_HEAP"):
        monkeypatch.delenv(var, raising=False)
    k = Settings().kafka
    assert (k.brokers, k.replication_factor, k.min_insync_replicas, k.heap) == (1, 1, 1, "768m")
    assert (k.broker_ports, k.controller_ports) == ([19092], [19093])


def test_kafka_brokers_3_is_a_local_cluster_replicated_3_min_isr_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("KAFKA_BROKERS", "3")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert (s.kafka.replication_factor, s.kafka.min_insync_replicas) == (3, 2)
    assert s.kafka.heap == "512m"
    # 19093 is the second broker's: the controllers take the ports after the brokers'.
    assert s.kafka.controller_ports == [19095, 19096, 19097]
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "29093")
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", "3")
    s = Settings()
    assert s.kafka.controller_ports == [29093, 29094, 29095]
    assert (s.kafka.replication_factor, s.kafka.min_insync_replicas) == (3, 3)
