"""The one Settings object, read once from the environment and passed in (STYLE.md §4).

Embedded defaults run everything on this machine; ``KAFKA_BOOTSTRAP``, ``REDIS_URL`` and
``CLICKHOUSE_URL`` switch to external services with no code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """``KAFKA_BOOTSTRAP`` set means an external cluster; unset means the embedded broker."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True)
    bootstrap: str | None = None
    port: int = 19092
    controller_port: int = 19093
    partitions: int = 4
    # 1/1 for the embedded single broker; a cluster wants 3/2 (docker-compose sets them).
    replication_factor: int = 1
    min_insync_replicas: int = 1
    heap: str = "768m"


class RedisSettings(BaseSettings):
    """``REDIS_URL`` set means an external server; unset means the embedded one."""

    model_config = SettingsConfigDict(env_prefix="REDIS_", frozen=True)
    url: str | None = None
    port: int = 16379


class ClickHouseSettings(BaseSettings):
    """``CLICKHOUSE_URL`` = ``http://host:8123`` for a server; unset means chDB in process."""

    model_config = SettingsConfigDict(env_prefix="CLICKHOUSE_", frozen=True)
    url: str | None = None
    database: str = "dancu"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DANCU_", frozen=True)

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".dancu")
    api_host: str = "127.0.0.1"
    api_port: int = 8765
    # The process that owns ClickHouse (Faust worker + sink + analytics): `dancu up` runs
    # it on store_port and serves the public API from a process of its own, which sends
    # the analytics routes there (DANCU_STORE_URL), so gate answers never queue behind
    # batch work.
    store_port: int = 8766
    store_url: str | None = None
    # Isolation knobs: tests and parallel deployments get their own topics/keys/group.
    topic_prefix: str = ""
    redis_prefix: str = "dancu:"
    app_id: str = "dancu"
    # The HMAC key of pseudonyms. Unset outside production: a random key made once per
    # data directory (infra/secrets.py); never a constant in the source.
    pseudonym_secret: SecretStr | None = None
    # The bearer token of GET /metrics (Prometheus's `authorization` credentials). Unset:
    # a random one made once in <data_dir>/metrics.token, mode 0600 (infra/secrets.py).
    metrics_token: SecretStr | None = None
    # The HMAC key signing checkpoint posters' QR codes (registry/posters.py). Unset: a
    # random one made once in <data_dir>/poster.key, mode 0600 (infra/secrets.py).
    poster_key: SecretStr | None = None
    # POST /v1/checkins without a credential (a resident's phone): per client IP, a token
    # bucket of this many requests refilled at this rate per second (api/ratelimit.py).
    checkin_burst: int = Field(default=60, ge=1)
    checkin_rate: float = Field(default=5.0, gt=0)
    # The exposure rulebook (versions, dwell per checkpoint type, the brake); the packaged
    # tracing/data/exposure_rules.yaml when unset. hold_above overrides the brake's limit.
    exposure_rules_file: Path | None = None
    hold_above: int | None = Field(default=None, ge=0)
    visit_window_days: int = 21
    batch_size: int = 5000
    batch_seconds: float = 0.2
    batch_max_bytes: int = 16 << 20
    log_level: str = "WARNING"
    # Alert webhooks (infra/webhooks.py): hosts or networks a receiver may be on besides
    # public addresses (the SSRF guard; unset: loopback outside production, none in it),
    # and the retry back-off (doubling from base, capped) while a receiver fails.
    webhook_allow: str | None = None
    webhook_retry_base: float = Field(default=1.0, gt=0)
    webhook_retry_cap: float = Field(default=300.0, gt=0)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.env == "production" and self.pseudonym_secret is None:
            raise ValueError("DANCU_PSEUDONYM_SECRET must be set in production")
        if self.pseudonym_secret is not None and len(self.pseudonym_secret) < 16:
            raise ValueError("DANCU_PSEUDONYM_SECRET must be at least 16 characters")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ValueError("DANCU_METRICS_TOKEN must be at least 16 characters")
        if self.poster_key is not None and len(self.poster_key) < 16:
            raise ValueError("DANCU_POSTER_KEY must be at least 16 characters")
        return self

    # Resolved endpoints -------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap or f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def clickhouse_url(self) -> str:
        return self.clickhouse.url or f"chdb://{self.data_dir.resolve() / 'clickhouse'}"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def webhook_allowed(self) -> list[str]:
        """The webhook allow-list (see ``webhook_allow``)."""
        if self.webhook_allow is None:
            return [] if self.env == "production" else ["127.0.0.1", "::1", "localhost"]
        return [h.strip() for h in self.webhook_allow.split(",") if h.strip()]

    def topic(self, name: str) -> str:
        """The real topic name for a logical one (``scans`` → ``<prefix>scans``)."""
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, once, at the composition root."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic validates the overrides
