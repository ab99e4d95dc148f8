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
