"""Redis Cluster slots, without a server: every multi-key operation of the stores (a Lua
script, a MULTI/EXEC) keeps its keys in one hash slot, while different people, places and
audiences still land on different slots (the load spreads). A key change that would
fail on a cluster with CROSSSLOT fails here first."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from infra import alerts, redis_store, tracing_store, webhooks
from infra.alerts import AlertStore, change_keys
from infra.credentials import Credentials
from infra.redis_store import SEEN_BUCKETS, cluster_nodes, seen_keys, slot
from infra.residents import ResidentStore
from infra.tracing_store import (
    TracingStore,
    directory_shards,
    infectious_keys,
    interval_keys,
)
from infra.webhooks import WebhookStore, webhook_keys
from tracing.alerts import AlertDraft
from tracing.exposure import Interval
from tracing.reports import ReportState

PREFIXES = ("dancu:", "t1a2b3c4d:", "")
SCOPES = ("d:Ba Đình", "d:Hoàn Kiếm", "o:Công ty Hoa", "o:odd}name{", "o:{braced}")


def one_slot(keys: Sequence[str]) -> bool:
    return len({slot(k) for k in keys}) == 1


@pytest.mark.parametrize("prefix", PREFIXES)
def test_key_builders_keep_each_operation_in_one_slot(prefix: str) -> None:
    for b in range(SEEN_BUCKETS):
        assert one_slot(seen_keys(prefix, b))  # a dedup bucket and its count
    for thing in ("cp-1", "HN-r1", "k" * 64, "a}b", "{x}", "Phở 24"):
        assert one_slot(interval_keys(prefix, thing))
        assert one_slot(infectious_keys(prefix, thing))
        assert one_slot(webhook_keys(prefix, thing))
    for directory, stem in directory_shards(prefix):  # what the prune's script reads
        assert one_slot([directory, stem + "cp-1", stem + "a}b"])
    for scope in SCOPES:
        assert one_slot(change_keys(prefix, scope, "alert-1"))
        assert slot(change_keys(prefix, scope, "a")[0]) == slot(change_keys(prefix, scope, "b")[0])


def test_the_load_still_spreads() -> None:
    p = "dancu:"
    assert len({slot(seen_keys(p, b)[0]) for b in range(SEEN_BUCKETS)}) == SEEN_BUCKETS
    shards = {slot(directory) for directory, _ in directory_shards(p)}
    assert len(shards) > 100  # of 128 directory shards
    districts = {slot(change_keys(p, f"d:District {i}", "x")[0]) for i in range(30)}
    assert len(districts) == 30
    people = {slot(f"{p}v:p:{i:064x}") for i in range(100)}  # untagged: one slot each
    assert len(people) > 95


def test_cluster_urls() -> None:
    assert cluster_nodes("redis://127.0.0.1:16379/0") is None
    assert cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001") == [
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
    ]
    assert cluster_nodes("rediss+cluster://u:p%40ss@h1:7000,[::1]:7001/") == [
        ("h1", 7000),
        ("::1", 7001),
    ]
    with pytest.raises(ValueError, match="database 0"):
        cluster_nodes("redis+cluster://h:7000/2")
    with pytest.raises(ValueError, match="host:port"):
        cluster_nodes("redis+cluster://h1:7000,h2")


# Lua scripts name every key they touch in KEYS (a cluster routes by them and refuses
# keys a script builds itself).
def _scripts(*modules: ModuleType) -> dict[str, str]:
    return {
        f"{m.__name__}.{name}": value
        for m in modules
        for name, value in vars(m).items()
        if isinstance(value, str) and "redis.call(" in value
    }


def test_scripts_take_their_keys_from_KEYS() -> None:
    scripts = _scripts(redis_store, tracing_store, alerts, webhooks)
    assert len(scripts) >= 9
    first_arg = re.compile(r"redis\.call\(\s*'[A-Z]+'\s*,\s*([^,)]*)")
    for name, text in scripts.items():
        for arg in first_arg.findall(text):
            # a key is KEYS[i], a local bound to one, or a lookup in a table of them
            ok = not arg.strip().startswith("ARGV") and ".." not in arg
            assert ok, f"{name}: key {arg!r} not from KEYS"


# The stores' MULTI/EXEC and scripts, run on a recorder -----------------------------------


class _Script:
    def __init__(self, owner: _Recorder, text: str) -> None:
        self.owner = owner
        self.script = text

    async def __call__(
        self, keys: Sequence[str] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        self.owner.check("script", keys)
        if isinstance(client, _Pipeline):
            client.queued.append(("EVALSHA", None))
            return client
        return [2, "1-0"] if self.script == alerts._STEP else 1


def _answer(name: str, args: tuple[Any, ...]) -> Any:
    """A plausible empty answer to a command."""
    if name == "smembers":
        return set()
    if name == "smismember":
        return [0] * len(args[1])
    if name == "hmget":
        return [None] * len(args[1])
    if name in ("hgetall",):
        return {}
    if name in ("zrangebyscore", "zrevrange", "zrange", "lrange"):
        return []
    if name in ("get", "hget"):
        return None
    return 1


class _Pipeline:
    def __init__(self, owner: _Recorder, transaction: bool) -> None:
        self.owner = owner
        self.transaction = transaction
        self.queued: list[tuple[str, Any]] = []
        self.keys: list[str] = []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> _Pipeline:
            if args:
                self.keys.append(str(args[0]))
            self.queued.append((name, _answer(name, args)))
            return self

        return queue

    async def execute(self) -> list[Any]:
        if self.transaction:
            self.owner.check("MULTI/EXEC", self.keys)
        return [answer for _, answer in self.queued]


class _Recorder:
    """Stands in for redis.asyncio.Redis: answers every command with an empty value and
    records each multi-key operation, failing one whose keys span slots."""

    def __init__(self) -> None:
        self.checked: list[tuple[str, list[str]]] = []
        self.connection_pool = type("Pool", (), {"connection_kwargs": {"port": 1}})()

    def check(self, what: str, keys: Sequence[str]) -> None:
        assert one_slot(keys), f"{what} over keys of several slots: {list(keys)}"
        self.checked.append((what, list(keys)))

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self, transaction)

    def register_script(self, text: str) -> _Script:
        return _Script(self, text)

    def __getattr__(self, name: str) -> Any:
        async def command(*args: Any, **kwargs: Any) -> Any:
            return _answer(name, args)

        return command


def test_the_stores_multi_key_operations_stay_in_one_slot() -> None:
    now = datetime.now(UTC)
    r: Any = _Recorder()
    p = "dancu:"

    async def run() -> None:
        creds = Credentials(r, p)
        await creds.add_user("lan", "official", "Ba Đình")
        await creds.revoke_user("lan")
        store = TracingStore(r, p, timedelta(days=21))
        body = {"report_id": "r1", "reported_at": now.isoformat()}
        await store.submit("r1", body)
        state = ReportState("r1", "001090000001", "pkA", body)
        await store.save(state, [])
        cps = [
            Interval("r1", "pkA", "F0", f"cp{i}", now, now, now - timedelta(days=2), now)
            for i in range(5)
        ]
        await store.register("r1", cps, [("pkB", now, now), ("pkC", now, now)])
        await store.unregister("r1")
        await store.prune()
        await store.drop(state)
        store_of_alerts = AlertStore(r, p, "redis://127.0.0.1:1/0")
        draft = AlertDraft("a1", "exposure", "d:Ba Đình", False, 1, "fp", now, {"x": 1})
        venue = AlertDraft("v1", "venue", "o:Hoa", False, 1, "fp2", now, {"y": 1})
        await store_of_alerts.apply([draft, venue], report_id="r1")
        found = alerts.Alert("a1", "exposure", "d:Ba Đình", "open", {}, "", "", "")
        await store_of_alerts.step(found, "acknowledged", "acknowledged", {"by": "an"})
        hooks = WebhookStore(r, p)
        hook = await hooks.add("d:Ba Đình", "http://127.0.0.1/", "", "an", "official", "0-0")
        await hooks.lease(hook.webhook_id, "t")
        await hooks.advance(hook.webhook_id, "t", "1-0")
        await hooks.failed(hook.webhook_id, 1, "x")
        await hooks.release(hook.webhook_id, "t")
        await hooks.delete(hook)
        people = ResidentStore(r, p)
        try:
            await people.update_many({"001090000001": {"colour": "red"}})
        finally:
            people.close_sync()

    asyncio.run(run())
    kinds = [what for what, _ in r.checked]
    # what ran: two MULTI/EXEC (a token, a report's submission), the alert scripts (two
    # changes and a step), the webhook scripts (lease, advance, failed, release) and the
    # prune's (none: its directory shards are empty here)
    assert kinds.count("MULTI/EXEC") == 2
    assert kinds.count("script") == 3 + 4


def test_redis_cluster_1_names_the_embedded_cluster() -> None:
    from infra.settings import RedisSettings, Settings

    s = Settings(redis=RedisSettings(cluster=True, port=17000))
    assert s.redis_url == "redis+cluster://127.0.0.1:17000,127.0.0.1:17001,127.0.0.1:17002"
    assert cluster_nodes(s.redis_url) == [("127.0.0.1", p) for p in (17000, 17001, 17002)]
    assert Settings(redis=RedisSettings(url="redis://r:6379/1", cluster=True)).redis_url == (
        "redis://r:6379/1"
    )
