"""A local N-broker KRaft Kafka cluster (3 by default) from the same Maven jars as the
single embedded broker (infra/services.py), for the suite's fault tests and for
``KAFKA_BROKERS=3 dancu services start``.

Every node is a combined broker+controller (all of them voters) on 127.0.0.1 with its own
client port, controller port and directory under one root (``node-1/``, ``node-2/``, …:
``data/``, ``logs/``, ``server.properties``, ``kafka.out``, ``pid``). New topics and Kafka's
own (consumer offsets, transactions) get replication factor 3 and
``min.insync.replicas=2``; a leader is never elected from outside the in-sync replicas.
So one broker may die without losing an acknowledged (``acks=all``) write, and writes go
on while two of three are in sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.services import (
    ClusterService,
    KafkaService,
    ServiceError,
    ServiceStatus,
    _pid_alive,
    format_kafka_storage,
    free_ports,
    kafka_java,
    kafka_properties,
    live_pid,
    new_cluster_id,
    port_open,
    resolve_kafka_jars,
)
from infra.settings import KafkaSettings, Settings

# A broker of a local cluster runs with less heap than the lone embedded one: three of
# them share a small machine with the platform (KAFKA_HEAP overrides it).
CLUSTER_HEAP = "512m"


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker+controller of the cluster; ``id`` is its Kafka ``node.id``."""

    id: int
    port: int
    controller_port: int
    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def out(self) -> Path:
        return self.dir / "kafka.out"

    @property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return live_pid(self.pidfile)


class KafkaCluster:
    """Start, stop, kill and restart the nodes of a local KRaft cluster under ``root``.

    ``ports``/``controller_ports`` unset: free ports are chosen (or, for a root that
    already holds a cluster, that cluster's). ``libs`` is where the broker jars are
    resolved (default ``root/libs``; pass the embedded broker's to share one copy).
    Processes are found by their pid files, so another process (``dancu services stop``)
    can stop a cluster this one started."""

    def __init__(
        self,
        root: Path,
        brokers: int = 3,
        ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        *,
        libs: Path | None = None,
        heap: str = CLUSTER_HEAP,
        partitions: int = 4,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("a cluster has at least one broker")
        self.root = root.resolve()
        self.layout_file = self.root / "cluster.json"
        saved = self._saved_layout()
        if ports is None and saved and len(saved["nodes"]) == brokers:
            ports = [n[1] for n in saved["nodes"]]
            controller_ports = controller_ports or [n[2] for n in saved["nodes"]]
        if ports is None or controller_ports is None:
            chosen = free_ports(2 * brokers)
            ports = list(ports) if ports is not None else chosen[:brokers]
            controller_ports = (
                list(controller_ports) if controller_ports is not None else chosen[brokers:]
            )
        ports, controller_ports = list(ports), list(controller_ports)
        if len(ports) != brokers or len(controller_ports) != brokers:
            raise ValueError(f"{brokers} brokers need {brokers} ports and controller ports")
        if len({*ports, *controller_ports}) != 2 * brokers:
            raise ValueError(f"ports must all differ: {ports} {controller_ports}")
        self.nodes = [
            KafkaNode(i + 1, ports[i], controller_ports[i], self.root / f"node-{i + 1}")
            for i in range(brokers)
        ]
        self.libs = (libs or self.root / "libs").resolve()
        self.heap = heap
        self.partitions = partitions
        self.replication_factor = replication_factor or min(3, brokers)
        self.min_insync_replicas = min_insync_replicas or (2 if self.replication_factor >= 3 else 1)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # What clients need ---------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def live_bootstrap(self) -> str:
        """The running nodes only (what this module's own admin clients connect to)."""
        alive = [n.address for n in self.nodes if n.pid() is not None]
        return ",".join(alive) or self.bootstrap

    def settings_env(self) -> dict[str, str]:
        """Environment for a dancu process on this cluster."""
        return {
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "KAFKA_PARTITIONS": str(self.partitions),
            "KAFKA_REPLICATION_FACTOR": str(self.replication_factor),
            "KAFKA_MIN_INSYNC_REPLICAS": str(self.min_insync_replicas),
        }

    def kafka_settings(self) -> KafkaSettings:
        """The same as :meth:`settings_env`, for a Settings built in this process."""
        return KafkaSettings(
            bootstrap=self.bootstrap,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
        )

    def node(self, node_id: int) -> KafkaNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id} in this cluster (nodes 1-{len(self.nodes)})")

    # Lifecycle -------------------------------------------------------------------------
    def running(self) -> list[int]:
        """The nodes whose process is alive."""
        return [n.id for n in self.nodes if n.pid() is not None]

    def start(self, timeout: float = 180.0) -> None:
        """Start every node that is not running and wait until all of them serve as
        brokers (registered, unfenced). Idempotent."""
        self._prepare()
        for n in self.nodes:
            if n.pid() is None:
                self._spawn(n)
        self._wait_brokers({n.id for n in self.nodes}, timeout)

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """(Re)start one node and wait until it serves as a broker again."""
        n = self.node(node_id)
        if n.pid() is None:
            self._check_ports([n])
            self._spawn(n)
        self._wait_brokers({node_id}, timeout, via=n)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no shutdown of any kind) and wait until it is gone."""
        n = self.node(node_id)
        pid = n.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self._reap(n, pid, 30.0)
        n.pidfile.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once (controlled shutdown); SIGKILL what is left after
        ``timeout`` (the last voters cannot finish theirs without a quorum)."""
        alive = [(n, pid) for n in self.nodes if (pid := n.pid()) is not None]
        for _, pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n, pid in alive:
            if not self._reap(n, pid, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._reap(n, pid, 10.0)
            n.pidfile.unlink(missing_ok=True)

    # Inspection (the tests read these) -------------------------------------------------
    def brokers_up(self, via: KafkaNode | None = None) -> set[int]:
        """The node ids the cluster's metadata lists as brokers (empty when unreachable)."""

        async def ask(admin: Any) -> set[int]:
            meta = await admin.describe_cluster()
            return {int(b["node_id"]) for b in meta["brokers"]}

        try:
            return _with_admin(via.address if via else self.live_bootstrap, ask, timeout=0)
        except Exception:
            return set()

    def topic_names(self) -> set[str]:
        """Every topic of the cluster, Kafka's own (``__consumer_offsets``) included."""

        async def ask(admin: Any) -> set[str]:
            return set(await admin.list_topics())

        return set(_with_admin(self.live_bootstrap, ask))

    def partitions_of(self, topics: Sequence[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """``{(topic, partition): {"leader", "replicas", "isr"}}`` for these topics."""

        async def ask(admin: Any) -> dict[tuple[str, int], dict[str, Any]]:
            found = {}
            for t in await admin.describe_topics(list(topics)):
                for p in t["partitions"]:
                    found[(t["topic"], int(p["partition"]))] = {
                        "leader": int(p["leader"]),
                        "replicas": [int(r) for r in p["replicas"]],
                        "isr": [int(r) for r in p["isr"]],
                    }
            return found

        return _with_admin(self.live_bootstrap, ask)

    def topic_configs(self, topics: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each topic's effective configuration (``{"min.insync.replicas": "2", …}``)."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async def ask(admin: Any) -> dict[str, dict[str, str]]:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
            )
            found: dict[str, dict[str, str]] = {}
            for response in responses:
                for resource in response.to_object()["resources"]:
                    found[resource["resource_name"]] = {
                        e["config_names"]: e["config_value"] for e in resource["config_entries"]
                    }
            return found

        return _with_admin(self.live_bootstrap, ask)

    def under_replicated(self, topics: Sequence[str]) -> int:
        """Partitions of these topics with fewer in-sync replicas than replicas."""
        return sum(len(p["isr"]) < len(p["replicas"]) for p in self.partitions_of(topics).values())

    # Internals -------------------------------------------------------------------------
    def _saved_layout(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.layout_file.read_text()))
        except (OSError, ValueError):
            return None

    def _layout(self) -> list[list[int]]:
        return [[n.id, n.port, n.controller_port] for n in self.nodes]

    def _check_ports(self, nodes: Sequence[KafkaNode]) -> None:
        for n in nodes:
            for port in (n.port, n.controller_port):
                if port_open(port):
                    raise ServiceError(
                        f"kafka node {n.id}: port {port} is taken by another process"
                    )

    def _prepare(self) -> str:
        """Jars, properties, and every node's storage formatted with one cluster ID."""
        if shutil.which("java") is None:
            raise ServiceError("kafka: a JDK (java) is needed to run the brokers")
        saved = self._saved_layout()
        if saved and saved["nodes"] != self._layout():
            raise ServiceError(
                f"kafka: {self.root} holds a cluster of other nodes/ports "
                f"({saved['nodes']}); remove it or start the same shape"
            )
        cluster_id = str(saved["cluster_id"]) if saved else new_cluster_id()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(json.dumps({"cluster_id": cluster_id, "nodes": self._layout()}))
        resolve_kafka_jars(self.libs)
        self._check_ports([n for n in self.nodes if n.pid() is None])
        voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        for n in self.nodes:
            n.logs.mkdir(parents=True, exist_ok=True)
            n.properties.write_text(
                kafka_properties(
                    node_id=n.id,
                    port=n.port,
                    controller_port=n.controller_port,
                    voters=voters,
                    data=n.data,
                    partitions=self.partitions,
                    replication=self.replication_factor,
                    min_insync=self.min_insync_replicas,
                )
            )
            format_kafka_storage(self.libs, n.logs, self.heap, n.properties, n.data, cluster_id)
        return cluster_id

    def _spawn(self, n: KafkaNode) -> None:
        out = open(n.out, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                kafka_java(self.libs, n.logs, self.heap, "kafka.Kafka", str(n.properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=n.dir,
            )
        finally:
            out.close()
        self._procs[n.id] = proc
        n.pidfile.write_text(str(proc.pid))

    def _reap(self, n: KafkaNode, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for a node's process to end; True when it did."""
        proc = self._procs.get(n.id)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            del self._procs[n.id]
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait_brokers(self, want: set[int], timeout: float, via: KafkaNode | None = None) -> None:
        deadline = time.monotonic() + timeout
        up: set[int] = set()
        while time.monotonic() < deadline:
            for node_id, proc in list(self._procs.items()):
                if node_id in want and proc.poll() is not None:
                    n = self.node(node_id)
                    raise ServiceError(
                        f"kafka node {node_id} exited with code {proc.returncode} while "
                        f"starting; see {n.out} and {n.logs / 'kafka.log'}"
                    )
            if all(port_open(self.node(i).port) for i in want):
                # Every running node's own view must list them: brokers learn of each
                # other from the controller at their own pace, and a client may ask any.
                asked = [via] if via else [n for n in self.nodes if n.pid() is not None]
                views = [self.brokers_up(n) for n in asked]
                up = set.intersection(*views) if views else set()
                if want <= up:
                    return
            time.sleep(0.5)
        raise ServiceError(
            f"kafka: nodes {sorted(want - up)} not serving as brokers within {timeout:.0f}s "
            f"(up: {sorted(up)}); see {self.root}/node-*/logs"
        )


def _with_admin(bootstrap: str, action: Any, timeout: float = 30.0) -> Any:
    """Run ``action(admin)`` on a fresh admin client in a loop of its own, again until it
    succeeds or ``timeout`` passes (right after a kill the client may pick the dead node
    until the cluster's metadata drops it)."""
    from aiokafka.admin import AIOKafkaAdminClient  # local: pulls in aiokafka

    async def run() -> Any:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            return await asyncio.wait_for(action(admin), 15)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(run())
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class KafkaClusterService(ClusterService):
    """The embedded Kafka as a local cluster (``KAFKA_BROKERS`` > 1) for
    ``dancu services``: nodes on the settings' broker and controller ports, under
    ``<data_dir>/kafka-cluster``, sharing the single broker's jars."""

    name = "kafka"
    START_TIMEOUT = 180.0

    def __init__(self, settings: Settings) -> None:
        k = settings.kafka
        self.settings = settings
        self.cluster = KafkaCluster(
            settings.data_dir.resolve() / "kafka-cluster",
            k.brokers,
            k.broker_ports,
            k.controller_ports,
            libs=KafkaService(settings).libs,
            heap=k.heap,
            partitions=k.partitions,
            replication_factor=k.replication_factor,
            min_insync_replicas=k.min_insync_replicas,
        )

    @property
    def external(self) -> bool:
        return self.settings.kafka.bootstrap is not None

    @property
    def endpoint(self) -> str:
        return self.settings.kafka_bootstrap

    def status(self) -> ServiceStatus:
        if self.external:
            return ServiceStatus(self.name, "external", self.endpoint)
        running = self.cluster.running()
        pid = self.cluster.nodes[0].pid()
        detail = f"{len(running)} of {len(self.cluster.nodes)} brokers running"
        if not running:
            return ServiceStatus(self.name, "stopped", self.endpoint, detail=detail)
        if len(running) < len(self.cluster.nodes):
            state = "degraded"  # `dancu services start` starts the missing ones
        elif all(port_open(n.port) for n in self.cluster.nodes):
            state = "running"
        else:
            state = "starting"
        return ServiceStatus(self.name, state, self.endpoint, pid, detail)
