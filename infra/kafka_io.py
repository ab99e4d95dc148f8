"""Kafka adapters: readiness, topic creation, a JSON producer and consumer lag."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra import topics
from infra.settings import Settings


def broker_ready(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker answers a metadata request (not merely an open port)."""

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.describe_cluster(), timeout)
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    return asyncio.run(probe())


async def create_topics(settings: Settings, names: Iterable[str] = topics.ALL) -> list[str]:
    """Create the project's topics if missing (idempotent); returns the real names."""
    real = [settings.topic(n) for n in names]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        config = {"min.insync.replicas": str(settings.kafka.min_insync_replicas)}
        new = [
            NewTopic(
                t,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                topic_configs=config,
            )
            for t in real
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        # A topic is created by the controller and learnt by the brokers a moment later: a
        # consumer group formed in between would be assigned nothing of it (Faust's
        # assignor skips a topic it cannot see) until its next rebalance.
        await _until_served(admin, real, timeout=60)
    finally:
        await admin.close()
    return real


async def _until_served(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Wait until the cluster's metadata shows every partition of ``names`` with a leader."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = {t["topic"]: t for t in await admin.describe_topics(names)}
        if all(
            t is not None
            and t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in (found.get(n) for n in names)
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(n for n in names if found.get(n, {}).get("error_code", -1) != 0)
            raise TimeoutError(f"Kafka topics not served after {timeout:.0f} s: {missing}")
        await asyncio.sleep(0.2)


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A batching, idempotent producer with ``acks=all``: a send that returned is on every
    in-sync replica, and a retried send is never written twice."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "max_request_size": 8 << 20,
        "acks": "all",
        "enable_idempotence": True,
        "client_id": f"{settings.app_id}-producer",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


class KafkaLag:
    """Consumer lag of the worker's group on a topic: end offsets minus committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            client_id=f"lag-{uuid.uuid4().hex[:6]}",
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()
        if self._admin:
            await self._admin.close()

    async def _partitions(self, logical_topic: str) -> list[TopicPartition]:
        assert self._admin and self._consumer, "KafkaLag.start() first"
        topic = self.settings.topic(logical_topic)
        parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def produced(self, logical_topic: str) -> int:
        """Records ever written to a topic: the sum of its partitions' end offsets (what
        /metrics counts dead letters by, whichever process wrote them)."""
        assert self._consumer, "KafkaLag.start() first"
        tps = await self._partitions(logical_topic)
        if not tps:
            return 0
        return sum((await self._consumer.end_offsets(tps)).values())

    async def pipeline(self) -> int:
        """Scan records not yet fully stored: waiting for a worker on ``scans``, plus rows
        waiting for the ClickHouse sink on ``store-rows``. 0 means every scan sent so far
        is in Redis and ClickHouse."""
        scans, rows = await asyncio.gather(
            self.lag(topics.SCANS), self.lag(topics.STORE_ROWS, self.settings.sink_group)
        )
        return scans + rows

    async def sink_backlog(self) -> int:
        """Records the ClickHouse sink has not written yet (``store-rows``, ``exposures``,
        ``report-status``): a rebuild from ClickHouse before this is 0 would miss them."""
        group = self.settings.sink_group
        found = await asyncio.gather(
            *(
                self.lag(t, group)
                for t in (topics.STORE_ROWS, topics.EXPOSURES, topics.REPORT_STATUS)
            )
        )
        return sum(found)

    async def lag(self, logical_topic: str = topics.SCANS, group: str | None = None) -> int:
        """Records of a topic that ``group`` (the workers' by default) has not committed."""
        assert self._admin and self._consumer, "KafkaLag.start() first"
        tps: Sequence[TopicPartition] = await self._partitions(logical_topic)
        if not tps:
            return 0
        ends = await self._consumer.end_offsets(list(tps))
        committed = await self._admin.list_consumer_group_offsets(
            group or self.settings.app_id, partitions=list(tps)
        )
        total = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += max(0, ends[tp] - done)
        return total

    async def ping(self) -> None:
        assert self._admin, "KafkaLag.start() first"
        await asyncio.wait_for(self._admin.describe_cluster(), 3.0)


MESSAGE_BYTES = 1 << 20


class KafkaHealthRecords:
    """The health-record sink on Kafka ``health-records``: one message per person (a JSON
    array of that person's records, in file order), keyed by ``person_id``, so one
    person's records reach one worker in order. ``send`` returns once every message is
    acknowledged by all in-sync replicas."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        settings: Settings,
        pseudonymize: Callable[[str], str] | None = None,
    ):
        self.producer = producer
        self.topic = settings.topic(topics.HEALTH_RECORDS)
        self.reports = settings.topic(topics.F0_REPORTS)
        # Report IDs travel on to exposures and ClickHouse: keyed, never a plain hash of
        # the ID number and sample time (which a dictionary attack would invert).
        self.pseudonymize = pseudonymize or (lambda text: text)

    async def _report_f0s(self, events: list[dict[str, object]]) -> list[asyncio.Future[object]]:
        """The f0-positives import feeds ``f0-reports`` too (the same topic as
        ``POST /v1/reports/f0``): one report per positive record, keyed by a report ID
        made from the record's natural key, so a re-import re-sends the same report."""
        futures = []
        for e in events:
            if e.get("kind") != "f0-positives":
                continue
            record = e["record"]
            assert isinstance(record, dict)
            report_id = f"imp-{self.pseudonymize('report:' + str(e['record_id']))[:24]}"
            body = {
                "action": "report",
                "report_id": report_id,
                "person_id": e["person_id"],
                "sample_time": record["sample_time"],
                "symptomatic": bool(record.get("symptomatic")),
                "onset_date": record.get("onset_date"),
                "reported_at": record.get("reported_at") or record["sample_time"],
                "import_id": e.get("import_id"),
            }
            futures.append(
                await self.producer.send(self.reports, orjson.dumps(body), key=report_id.encode())
            )
        return futures

    async def send(self, events: list[dict[str, object]]) -> None:
        by_person: dict[str, list[bytes]] = defaultdict(list)
        for e in events:
            by_person[str(e["person_id"])].append(orjson.dumps(e))
        futures = []
        for person, encoded in by_person.items():
            # Messages of at most ~1 MiB, in order, same key: one person's many records
            # (long declarations) never exceed the broker's limit.
            part: list[bytes] = []
            size = 0
            for item in [*encoded, None]:
                if item is None or (part and size + len(item) > MESSAGE_BYTES):
                    value = b"[" + b",".join(part) + b"]"
                    futures.append(await self.producer.send(self.topic, value, key=person.encode()))
                    part, size = [], 0
                if item is not None:
                    part.append(item)
                    size += len(item) + 1
        futures.extend(await self._report_f0s(events))
        await asyncio.gather(*futures)
