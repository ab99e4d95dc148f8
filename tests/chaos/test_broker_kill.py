"""One broker of three SIGKILLed mid-stream and restarted: a platform on a private
three-broker cluster (replication 3, ``min.insync.replicas=2``, idempotent ``acks=all``
producers) takes scans from checkpoint devices while the broker leading most of the
``scans`` partitions is killed, the stream goes on with two brokers in sync, and the
broker comes back. Devices retry what the API refused (503 while leadership moved)
like real ones; afterwards every scan the API acknowledged is in ClickHouse exactly once
and in both Redis visit indexes exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from tests.chaos.report import Outcome, record
from tests.chaos.support import indexed, once, stored, wait_for
from tests.integration.cluster import DeviceStream, cluster_platform, start_cluster
from tests.integration.helpers import make_scans

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

N, RATE = 20_000, 250.0  # scans, and their pace in scans/s (about 80 s of traffic)
DOWN = 20.0  # seconds the broker stays dead while the devices keep sending


@pytest.fixture
def cluster(base_settings: Settings, tmp_path: Path) -> Iterator[KafkaCluster]:
    c = start_cluster(base_settings, tmp_path / "kafka")
    yield c
    c.stop()


def test_one_broker_of_three_killed_mid_stream_and_restarted_no_acknowledged_scan_lost(
    base_settings: Settings, cluster: KafkaCluster, tmp_path: Path
) -> None:
    platform = cluster_platform(base_settings, cluster, tmp_path / "dancu")
    scans_topic = platform.settings.topic("scans")
    try:
        platform.start(timeout=180)
        scans = make_scans(N, seed=47, checkpoints=40)
        devices = DeviceStream(platform, scans, rate=RATE).start()
        wait_for(devices.acked, lambda n: n >= N // 4, 300, "a quarter of the scans acknowledged")

        leaders = Counter(p["leader"] for p in cluster.partitions_of([scans_topic]).values())
        victim = min(leaders, key=lambda node: (-leaders[node], node))
        acked_at_kill = devices.acked()
        cluster.kill(victim)
        killed = time.monotonic()
        wait_for(
            lambda: cluster.partitions_of([scans_topic]),
            lambda parts: all(p["leader"] not in (victim, -1) for p in parts.values()),
            90,
            f"the scans partitions led by brokers other than {victim}",
        )
        moved = time.monotonic() - killed
        # Down at least DOWN seconds, and until the two left have taken writes (on a busy
        # machine the clients may take longer than that to find the new leaders).
        wait_for(
            lambda: devices.acked() - acked_at_kill,
            lambda n: n > 0,
            120,
            "scans acknowledged with two brokers of three",
        )
        time.sleep(max(0.0, killed + DOWN - time.monotonic()))
        acked_while_down = devices.acked() - acked_at_kill
        restarted = time.monotonic()
        cluster.start_node(victim, timeout=180)
        back = time.monotonic()
        every_topic = sorted(cluster.topic_names())
        wait_for(
            lambda: cluster.under_replicated(every_topic),
            lambda n: n == 0,
            180,
            "every partition fully replicated again",
        )
        recovery = time.monotonic() - restarted

        tally = devices.join(600)
        stats = platform.wait_processed(N, timeout=300)
        index = indexed(platform.settings)
    finally:
        platform.stop()
        platform.sign_out()
    acked = tally.acked
    ch = stored(platform)
    p_once, c_once, ch_once = (
        once(acked, index.by_person),
        once(acked, index.by_checkpoint),
        once(acked, ch.visits),
    )
    replayed = sum(n - 1 for n in ch.visit_rows.values() if n > 1)
    refused = sum(tally.refusals.values())
    outage = (
        f" over {tally.last_refusal - tally.first_refusal:.0f} s"
        if tally.first_refusal is not None and tally.last_refusal is not None
        else ""
    )
    record(
        Outcome(
            "one broker of three killed and restarted",
            len(acked),
            max(p_once[0], c_once[0], ch_once[0]),
            max(p_once[1], c_once[1], ch_once[1]),
            recovery,
            f"broker {victim} (leader of {leaders[victim]} of {sum(leaders.values())} scans "
            f"partitions) SIGKILLed after {acked_at_kill:,} scans, leaders moved in "
            f"{moved:.0f} s, restarted {restarted - killed:.0f} s after the kill (serving "
            f"{back - restarted:.0f} s later); {acked_while_down:,} scans acknowledged "
            f"meanwhile on 2 of 3; {refused} requests ({tally.refused_scans:,} scans) "
            f"refused{outage} "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(tally.refusals.items())) or 'none'}) "
            f"and retried; slowest acknowledgement {tally.slowest:.1f} s; {replayed} "
            "ClickHouse rows written twice, collapsed by scan ID; recovery: from the restart "
            "until every partition was back to 3 in-sync replicas",
        )
    )
    assert 0 < acked_at_kill < N
    assert acked_while_down > 0  # two of three in sync: writes go on
    assert sorted(acked) == sorted(str(s["scan_id"]) for s in scans)
    assert stats["scans_processed"] == N and stats["visits_total"] == N, stats
    assert (p_once, c_once, ch_once) == ((0, 0, 0),) * 3
    assert ch.visits == dict.fromkeys(acked, 1)
