"""Telling a store that is away from a store that refuses: a transient failure (the store
is unreachable, busy or failing over) is retried until it passes; a permanent one (the
store refuses this data, or the data breaks our code) must not stall a partition, so the
batch is split and each refused record is dead-lettered with the store's reason.

And the agents' health: what is failing right now, since when, reported by ``/healthz``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import aiokafka.errors as kafka_errors
import redis.exceptions as redis_errors
from clickhouse_connect.driver import exceptions as ch_errors

_REDIS_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
)
# ClickHouse server codes that mean "not now" rather than "not this data": memory limit,
# too many queries or parts, timeouts, network, a replica being unavailable.
_CH_TRANSIENT_CODES = {159, 164, 202, 209, 210, 241, 242, 243, 319, 425, 999, 1002}
_CH_CODE = re.compile(r"Code: (\d+)")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same write later can succeed without changing the data."""
    if isinstance(exc, _REDIS_TRANSIENT):
        return True
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(
        ("LOADING", "MISCONF", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")
    ):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc, kafka_errors.KafkaConnectionError | kafka_errors.KafkaTimeoutError
        )
    if isinstance(exc, ch_errors.OperationalError):
        return True
    if isinstance(exc, ch_errors.DatabaseError):
        m = _CH_CODE.search(str(exc))
        code = int(m.group(1)) if m else 0
        if code == 252:  # TOO_MANY_PARTS: merges behind (wait) or partitions in one block (data)
            return "single INSERT block" not in str(exc)
        return code in _CH_TRANSIENT_CODES
    if isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
        return True  # uvloop: a write on a connection that was reset under the client
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


@dataclass
class AgentHealth:
    """What the agents are waiting on: ``{step: (error, since)}``; empty when all is well."""

    failing: dict[str, tuple[str, float]] = field(default_factory=dict)

    def fail(self, step: str, exc: BaseException) -> None:
        since = self.failing.get(step, ("", time.time()))[1]
        self.failing[step] = (f"{type(exc).__name__}: {exc}"[:300], since)

    def ok(self, step: str) -> None:
        self.failing.pop(step, None)

    def report(self) -> dict[str, dict[str, object]]:
        now = time.time()
        return {
            step: {"error": error, "for_seconds": round(now - since, 1)}
            for step, (error, since) in self.failing.items()
        }
