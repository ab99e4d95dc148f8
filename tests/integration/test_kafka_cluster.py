"""dancu on a real three-broker KRaft cluster (the launcher of infra/kafka_cluster.py):
every topic, the project's and Kafka's and Faust's own, replicated three times with
``min.insync.replicas=2``, and scans end to end. The broker-kill fault test is in
tests/chaos/test_broker_kill.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from streams.app import _IdempotentApp
from tests.integration.cluster import DeviceStream, cluster_platform, start_cluster
from tests.integration.helpers import make_scans
from tests.integration.test_ingest import produce_raw, read_dead_letters, redis_counts

pytestmark = pytest.mark.integration
N = 600


@pytest.fixture(scope="module")
def cluster(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaCluster]:
    c = start_cluster(base_settings, tmp_path_factory.mktemp("kafka-cluster"))
    yield c
    c.stop()


def test_three_brokers_each_a_voter_on_its_own_ports(cluster: KafkaCluster) -> None:
    assert cluster.running() == [1, 2, 3]
    assert cluster.brokers_up() == {1, 2, 3}
    ports = {p for n in cluster.nodes for p in (n.port, n.controller_port)}
    assert len(ports) == 6
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert cluster.settings_env()["KAFKA_REPLICATION_FACTOR"] == "3"
    assert cluster.settings_env()["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    props = cluster.node(2).properties.read_text()
    voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in cluster.nodes)
    assert f"controller.quorum.voters={voters}" in props
    assert "unclean.leader.election.enable=false" in props


def test_scans_end_to_end_and_every_topic_replicated_three_times_min_isr_two(
    base_settings: Settings, cluster: KafkaCluster, tmp_path: Path
) -> None:
    platform = cluster_platform(base_settings, cluster, tmp_path / "dancu")
    try:
        platform.start(timeout=180)
        scans = make_scans(N, seed=31)
        tally = DeviceStream(platform, scans, rate=2000).start().join(300)
        assert sorted(tally.acked) == sorted(str(s["scan_id"]) for s in scans)
        stats = platform.wait_processed(N, timeout=180)
        assert stats["scans_processed"] == N and stats["visits_total"] == N, stats
        assert asyncio.run(redis_counts(platform)) == (N, N)
        # A record no worker can read: its dead letter goes out through Faust's own
        # (idempotent, acks=all) producer, onto a topic replicated three times.
        asyncio.run(produce_raw(platform, [b"{not json"]))
        letters = asyncio.run(read_dead_letters(platform, 1))
        assert [d["reason"][:14] for d in letters] == ["not valid JSON"]
    finally:
        platform.stop()
        platform.sign_out()

    names = cluster.topic_names()
    ours = {platform.settings.topic(t) for t in ("scans", "f0-reports", "exposures")}
    assert ours | {"__consumer_offsets"} <= names, names
    # Faust's own topics (its leader-assignor topic) come from the same settings.
    assert any("__assignor-__leader" in t for t in names), names
    partitions = cluster.partitions_of(sorted(names))
    assert {t for t, _ in partitions} == names
    assert all(len(p["replicas"]) == 3 for p in partitions.values()), partitions
    # A follower starved of CPU for a moment drops out of the in-sync set and comes back.
    deadline = time.monotonic() + 60
    while cluster.under_replicated(sorted(names)) and time.monotonic() < deadline:
        time.sleep(0.5)
    partitions = cluster.partitions_of(sorted(names))
    thin = {k: p for k, p in partitions.items() if len(p["isr"]) != 3}
    assert not thin, thin
    configs = cluster.topic_configs(sorted(names))
    assert {t: c["min.insync.replicas"] for t, c in configs.items()} == dict.fromkeys(names, "2")
    assert {c["unclean.leader.election.enable"] for c in configs.values()} == {"false"}


async def test_the_faust_producer_is_idempotent_with_acks_all() -> None:
    """Faust asks aiokafka for idempotence only in transactions; the app's producer (dead
    letters, Faust's own topics) always does."""
    app = _IdempotentApp("idempotence-check", broker="kafka://127.0.0.1:1")
    producer = app.producer._new_producer()  # type: ignore[attr-defined]  # aiokafka driver's
    try:
        assert producer._txn_manager is not None  # aiokafka's idempotent-producer state
        assert producer.client is not None and producer._sender._acks == -1
    finally:
        await producer.stop()
