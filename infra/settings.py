"""The one Settings object, read once from the environment and passed in (STYLE.md §4).

Embedded defaults run everything on this machine; ``KAFKA_BOOTSTRAP``, ``REDIS_URL`` and
``CLICKHOUSE_URL`` switch to external services with no code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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
    # The embedded Kafka's brokers: 1, or a local KRaft cluster (`KAFKA_BROKERS=3 dancu
    # services start`, infra/kafka_cluster.py) on port, port+1, …, whose replication
    # defaults become 3 (at most the brokers) / 2 and heap 512m per broker unless set.
    brokers: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _cluster_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            brokers = int(data.get("brokers", 1))
        except (TypeError, ValueError):
            return data  # the field's own validation names the problem
        if brokers > 1:
            replication = min(3, brokers)
            data = {
                "replication_factor": replication,
                "min_insync_replicas": 2 if replication >= 3 else 1,
                "heap": "512m",
                **data,
            }
        return data

    @property
    def broker_ports(self) -> list[int]:
        """The embedded brokers' client ports: port, port+1, …"""
        return [self.port + i for i in range(self.brokers)]

    @property
    def controller_ports(self) -> list[int]:
        """The embedded brokers' controller ports: controller_port, +1, …; or, when those
        would collide with the client ports (19093 is the second broker's with the
        defaults), the ports right after the last client port."""
        ports = [self.controller_port + i for i in range(self.brokers)]
        if set(ports) & set(self.broker_ports):
            return [self.port + self.brokers + i for i in range(self.brokers)]
        return ports


class RedisSettings(BaseSettings):
    """``REDIS_URL`` set means an external server (or cluster: ``redis+cluster://h:p,…``);
    unset means the embedded one."""

    model_config = SettingsConfigDict(env_prefix="REDIS_", frozen=True)
    url: str | None = None
    port: int = 16379
    # The embedded Redis as a three-master Redis Cluster (`REDIS_CLUSTER=1 dancu services
    # start`, infra/redis_cluster.py) on port, port+1 and port+2.
    cluster: bool = False


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
    # Requests in flight (api/flood.py, 429 over a cap): per client (its address and the
    # credential it claims; 4x that per address), in the general pool (the gate's pool and
    # alert streams get twice as many each), and MiB of large request bodies being read.
    flood_per_client: int = Field(default=64, ge=1)
    flood_in_flight: int = Field(default=512, ge=1)
    flood_body_mib: int = Field(default=64, ge=1)
    # The exposure rulebook (versions, dwell per checkpoint type, the brake); the packaged
    # tracing/data/exposure_rules.yaml when unset. hold_above overrides the brake's limit.
    exposure_rules_file: Path | None = None
    hold_above: int | None = Field(default=None, ge=0)
    visit_window_days: int = 21
    batch_size: int = 5000
    batch_seconds: float = 0.2
    batch_max_bytes: int = 16 << 20
    # How long Kafka waits for a silent worker before its partitions go to the others
    # (heartbeats every 3 s): a killed worker's share resumes within this (Faust's 60 s
    # default stalled them a minute).
    session_timeout: float = Field(default=15.0, ge=6.0)
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
        return self.kafka.bootstrap or ",".join(f"127.0.0.1:{p}" for p in self.kafka.broker_ports)

    @property
    def redis_url(self) -> str:
        if self.redis.url:
            return self.redis.url
        if self.redis.cluster:
            ports = range(self.redis.port, self.redis.port + 3)
            return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        return f"redis://127.0.0.1:{self.redis.port}/0"

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

    @property
    def sink_group(self) -> str:
        """The consumer group of the store's owner (the ClickHouse sink)."""
        return f"{self.app_id}-sink"

    def topic(self, name: str) -> str:
        """The real topic name for a logical one (``scans`` → ``<prefix>scans``)."""
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, once, at the composition root."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic validates the overrides
