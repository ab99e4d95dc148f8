"""A three-master Redis Cluster from Debian's ``redis-server`` on this machine: what Redis
looks like past one machine (each master owns a third of the 16,384 hash slots), for the
suite and for ``REDIS_CLUSTER=1 dancu services start``.

Each node has its own port, cluster-bus port, directory (append-only file, ``nodes.conf``)
and log; ``redis-cli --cluster create`` assigns the slots once, and a restarted node
rejoins from its ``nodes.conf``. No replicas: a killed master's slots are unavailable
until it is back (the others go on serving theirs: ``cluster-require-full-coverage no``).
Clients find it with ``REDIS_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001,...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from infra import services
from infra.services import (
    REDIS_MEMORY_ARGS,
    ClusterService,
    ServiceError,
    ServiceStatus,
    _apt_install,
    _pid_alive,
    ephemeral_floor,
    live_pid,
    port_open,
)
from infra.settings import Settings

MASTERS = 3


def free_ports(n: int) -> list[int]:
    """``n`` ports free now whose cluster-bus ports (+10000) are free too, all of them
    below the kernel's ephemeral range (see :func:`infra.services.free_ports`)."""
    return services.free_ports(
        n, low=20_000, high=ephemeral_floor() - 10_000, ok=lambda p: not port_open(p + 10_000)
    )


def _ask(port: int, *command: str, timeout: float = 2.0) -> str:
    """One command to one node over a plain socket (RESP): its reply as text, "" when
    the node does not answer."""
    payload = f"*{len(command)}\r\n".encode()
    for part in command:
        raw = part.encode()
        payload += b"$" + str(len(raw)).encode() + b"\r\n" + raw + b"\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(payload)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    head, _, rest = data.partition(b"\r\n")
                    if len(rest) >= int(head[1:]) + 2:
                        break
        return data.decode(errors="replace")
    except OSError:
        return ""


class RedisCluster:
    """Three masters on ``ports`` (three free ones by default) under ``root``."""

    def __init__(
        self,
        root: Path,
        ports: Sequence[int] | None = None,
        *,
        node_timeout_ms: int = 5000,
    ) -> None:
        self.root = root.resolve()
        self.ports = list(ports) if ports is not None else free_ports(MASTERS)
        if len(self.ports) != MASTERS:
            raise ValueError(f"ports: a cluster here has {MASTERS} masters")
        self.node_timeout_ms = node_timeout_ms
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` of this cluster (every node a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _dir(self, node: int) -> Path:
        return self.root / f"node-{self.ports[node]}"

    def _pidfile(self, node: int) -> Path:
        return self._dir(node) / "pid"

    def pid(self, node: int) -> int | None:
        return live_pid(self._pidfile(node))

    def _command(self, node: int) -> list[str]:
        port = self.ports[node]
        return [
            "redis-server",
            "--port",
            str(port),
            "--cluster-port",
            str(port + 10000),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self._dir(node)),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(self._dir(node) / "redis.log"),
            "--daemonize",
            "no",
            *REDIS_MEMORY_ARGS,
        ]

    # Lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> RedisCluster:
        """Start the nodes not running, create the cluster the first time, and return once
        every node says ``cluster_state:ok``. Idempotent."""
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            _apt_install("redis-server")
        deadline = time.monotonic() + timeout
        for node in range(MASTERS):
            self._spawn(node)
        for node in range(MASTERS):
            self._wait_ping(node, deadline)
        if not self._created():
            self._create(deadline)
        self.wait_ok(deadline - time.monotonic())
        return self

    def _spawn(self, node: int) -> None:
        if self.pid(node) is not None:
            return
        port = self.ports[node]
        if port_open(port):
            raise ServiceError(f"redis-cluster: port {port} is taken by another process")
        self._dir(node).mkdir(parents=True, exist_ok=True)
        out = open(self._dir(node) / "redis.out", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            self._command(node),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self._dir(node),
        )
        out.close()
        self._procs[node] = proc
        self._pidfile(node).write_text(str(proc.pid))

    def _wait_ping(self, node: int, deadline: float) -> None:
        port = self.ports[node]
        while time.monotonic() < deadline:
            proc = self._procs.get(node)
            if proc is not None and proc.poll() is not None:
                raise ServiceError(
                    f"redis-cluster: node {port} exited with code {proc.returncode}; "
                    f"see {self._dir(node) / 'redis.log'}"
                )
            if _ask(port, "PING").startswith("+PONG"):  # not LOADING any more
                return
            time.sleep(0.1)
        raise ServiceError(f"redis-cluster: node {port} did not answer in time")

    def _info(self, node: int) -> dict[str, str]:
        text = _ask(self.ports[node], "CLUSTER", "INFO")
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def _created(self) -> bool:
        """Slots were assigned before (a restart, not a first start)."""
        return any(
            int(self._info(n).get("cluster_slots_assigned", "0")) > 0 for n in range(MASTERS)
        )

    def _create(self, deadline: float) -> None:
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        result = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=max(10.0, deadline - time.monotonic()),
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                "redis-cluster: redis-cli --cluster create failed:\n"
                + result.stdout[-2000:]
                + result.stderr[-2000:]
            )

    def ok(self, node: int) -> bool:
        info = self._info(node)
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == "16384"
            and info.get("cluster_known_nodes") == str(MASTERS)
        )

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every node reports the whole cluster healthy (all slots served)."""
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if all(self.ok(n) for n in range(MASTERS)):
                return
            time.sleep(0.2)
        states = {self.ports[n]: self._info(n).get("cluster_state", "down") for n in range(MASTERS)}
        raise ServiceError(f"redis-cluster: not cluster_state:ok in time ({states})")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL past ``timeout``)."""
        pids = [(n, self.pid(n)) for n in range(MASTERS)]
        for _, pid in pids:
            if pid is not None:
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node, pid in pids:
            if pid is None:
                continue
            while time.monotonic() < deadline and _pid_alive(pid):
                self._reap(node)
                time.sleep(0.1)
            if _pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
            self._reap(node, wait=True)
            self._pidfile(node).unlink(missing_ok=True)

    def _reap(self, node: int, wait: bool = False) -> None:
        proc = self._procs.get(node)
        if proc is None:
            return
        if wait:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return
        if proc.poll() is not None:
            self._procs.pop(node, None)

    # Faults -------------------------------------------------------------------------
    def kill(self, node: int) -> None:
        """SIGKILL one master (what it had not written to its append-only file is lost
        with it; its slots are unavailable until :meth:`start_node`)."""
        pid = self.pid(node)
        if pid is None:
            return
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            self._reap(node)
            time.sleep(0.05)
        self._reap(node, wait=True)
        self._pidfile(node).unlink(missing_ok=True)

    def start_node(self, node: int, *, empty: bool = False, timeout: float = 60.0) -> None:
        """Start a stopped master again; it rejoins with its slots (``nodes.conf``).
        ``empty``: its data is gone first (a machine replaced), the slots stay its own."""
        if empty and self.pid(node) is None:
            shutil.rmtree(self._dir(node) / "appendonlydir", ignore_errors=True)
            (self._dir(node) / "dump.rdb").unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        self._spawn(node)
        self._wait_ping(node, deadline)
        self.wait_ok(deadline - time.monotonic())

    def status(self) -> list[ServiceStatus]:
        rows = []
        for node, port in enumerate(self.ports):
            pid = self.pid(node)
            state = "running" if pid and self.ok(node) else "starting" if pid else "stopped"
            rows.append(ServiceStatus(f"redis-cluster:{port}", state, self.url, pid))
        return rows


class RedisClusterService(ClusterService):
    """``dancu services`` for ``REDIS_CLUSTER=1``: the cluster on ``REDIS_PORT`` and the
    two ports after it, under ``<data_dir>/redis-cluster`` (an external ``REDIS_URL``
    makes it external, as for the single server)."""

    name = "redis-cluster"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        port = settings.redis.port
        self.cluster = RedisCluster(
            settings.data_dir.resolve() / "redis-cluster", [port, port + 1, port + 2]
        )

    @property
    def external(self) -> bool:
        return self.settings.redis.url is not None

    def status(self) -> ServiceStatus:
        if self.external:
            return ServiceStatus(self.name, "external", self.settings.redis_url)
        rows = self.cluster.status()
        states = {r.state for r in rows}
        state = states.pop() if len(states) == 1 else "degraded"  # some nodes down
        pids = ",".join(str(r.pid) for r in rows if r.pid)
        return ServiceStatus(self.name, state, self.settings.redis_url, None, pids)
