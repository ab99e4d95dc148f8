"""Start, stop and inspect the embedded services: Kafka (KRaft, from Maven Central jars)
and Redis (Debian's redis-server). Idempotent; data and logs live under one directory.

ClickHouse needs no service in the embedded default: chDB runs inside the owning process.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from infra.settings import Settings

# The largest record the broker takes (a device batch is one record); a Kafka cluster
# for dancu needs the same (docker-compose.yml sets it).
MESSAGE_MAX_BYTES = 10 << 20
# Residents are ~17-field hashes whose addresses exceed 64 bytes: keep them in Redis's
# compact listpack encoding (about 3x less memory than a hashtable). The single server
# and every node of a Redis Cluster (infra/redis_cluster.py) run with it.
REDIS_MEMORY_ARGS = ["--hash-max-listpack-value", "512"]


class ServiceError(RuntimeError):
    """A service could not be obtained, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | starting | stopped | external | degraded (a cluster short of nodes)
    endpoint: str
    pid: int | None = None
    detail: str = ""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(
    n: int, low: int = 20_000, high: int | None = None, ok: Callable[[int], bool] | None = None
) -> list[int]:
    """``n`` distinct ports free right now (held open together while chosen), between
    ``low`` and ``high`` (default: the kernel's ephemeral range, which they stay below: no
    outgoing connection on this machine can take one before its server binds it, or while
    its server restarts). ``ok``: a further condition on a port."""
    high = high if high is not None else ephemeral_floor()
    pick = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for _ in range(20 * n + 200):
            if len(socks) == n:
                break
            s = socket.socket()
            port = pick.randrange(low, high) if high > low else 0
            taken = {x.getsockname()[1] for x in socks}
            try:
                if port in taken or (ok is not None and port and not ok(port)):
                    raise OSError("not this one")
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise ServiceError(f"no {n} free ports between {low} and {high}")
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def live_pid(pidfile: Path) -> int | None:
    """The pid a pid file names, if that process is alive (not a zombie)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


class ClusterService:
    """``dancu services`` for a local cluster: subclasses set ``cluster`` (with
    ``start(timeout)`` and ``stop(timeout)``), ``external``, ``status()`` and
    ``START_TIMEOUT``."""

    START_TIMEOUT = 90.0
    cluster: Any

    @property
    def external(self) -> bool:
        raise NotImplementedError

    def status(self) -> ServiceStatus:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> ServiceStatus:
        if not self.external:
            self.cluster.start(self.START_TIMEOUT if timeout is None else timeout)
        return self.status()

    def stop(self, timeout: float = 30.0) -> ServiceStatus:
        if not self.external:
            self.cluster.stop(timeout)
        return self.status()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return True
    return state != "Z"


class _Service:
    name = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir.resolve() / self.name
        self.logs = settings.data_dir.resolve() / "logs"
        self.pidfile = self.root / "pid"

    # subclasses provide: external, port, endpoint, _prepare(), _command()
    external: bool
    port: int
    endpoint: str

    def pid(self) -> int | None:
        return live_pid(self.pidfile)

    def status(self) -> ServiceStatus:
        if self.external:
            return ServiceStatus(self.name, "external", self.endpoint)
        pid = self.pid()
        if pid and port_open(self.port):
            return ServiceStatus(self.name, "running", self.endpoint, pid)
        if pid:
            return ServiceStatus(self.name, "starting", self.endpoint, pid)
        return ServiceStatus(self.name, "stopped", self.endpoint)

    def start(self, timeout: float = 90.0) -> ServiceStatus:
        if self.external:
            return self.status()
        if self.pid() and port_open(self.port):
            return self.status()
        if port_open(self.port):
            raise ServiceError(
                f"{self.name}: port {self.port} is taken by another process; stop it or set "
                f"{self._port_env} to a free port"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._prepare()
        out = open(self.logs / f"{self.name}.out", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            self._command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
            env=self._env(),
        )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"see {self.logs / (self.name + '.out')}"
                )
            if port_open(self.port) and self._ready():
                return self.status()
            time.sleep(0.25)
        raise ServiceError(
            f"{self.name} did not accept connections on port {self.port} "
            f"within {timeout:.0f}s; see {self.logs}"
        )

    def stop(self, timeout: float = 30.0) -> ServiceStatus:
        pid = self.pid()
        if pid is None or self.external:
            return self.status()
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return self.status()

    _port_env = ""

    def _prepare(self) -> None:
        pass

    def _ready(self) -> bool:
        return True

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _command(self) -> list[str]:
        raise NotImplementedError


class RedisService(_Service):
    name = "redis"
    _port_env = "REDIS_PORT"

    @property
    def external(self) -> bool:  # type: ignore[override]  # computed from settings
        return self.settings.redis.url is not None

    @property
    def port(self) -> int:  # type: ignore[override]
        return self.settings.redis.port

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        return self.settings.redis_url

    def _prepare(self) -> None:
        if shutil.which("redis-server") is None:
            _apt_install("redis-server")

    def _ready(self) -> bool:
        # The port opens while the append-only file is still loading; PING says LOADING.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(self.logs / "redis.log"),
            "--daemonize",
            "no",
            *REDIS_MEMORY_ARGS,
        ]


class KafkaService(_Service):
    name = "kafka"
    _port_env = "KAFKA_PORT"

    @property
    def external(self) -> bool:  # type: ignore[override]
        return self.settings.kafka.bootstrap is not None

    @property
    def port(self) -> int:  # type: ignore[override]
        return self.settings.kafka.port

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        return self.settings.kafka_bootstrap

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    def resolve_jars(self) -> Path:
        """Copy the broker jars from Maven Central (cached in ~/.m2) once."""
        return resolve_kafka_jars(self.libs)

    def _java(self, *args: str) -> list[str]:
        return kafka_java(self.libs, self.logs, self.settings.kafka.heap, *args)

    def _properties(self) -> Path:
        k = self.settings.kafka
        props = self.root / "server.properties"
        props.write_text(
            kafka_properties(
                node_id=1,
                port=k.port,
                controller_port=k.controller_port,
                voters=f"1@127.0.0.1:{k.controller_port}",
                data=self.root / "data",
                partitions=k.partitions,
            )
        )
        return props

    def _prepare(self) -> None:
        if port_open(self.settings.kafka.controller_port):
            raise ServiceError(
                f"kafka: controller port {self.settings.kafka.controller_port} "
                "is taken; set KAFKA_CONTROLLER_PORT to a free port"
            )
        if shutil.which("java") is None:
            raise ServiceError("kafka: a JDK (java) is needed to run the broker")
        self.resolve_jars()
        props = self._properties()
        format_kafka_storage(
            self.libs,
            self.logs,
            self.settings.kafka.heap,
            props,
            self.root / "data",
            new_cluster_id(),
        )

    def _command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.root / "server.properties"))

    def _ready(self) -> bool:
        # The port opens before the broker has registered; ask for metadata too.
        from infra.kafka_io import broker_ready  # local: pulls in aiokafka

        return broker_ready(self.endpoint)


def new_cluster_id() -> str:
    """A random KRaft cluster ID (every node of one cluster is formatted with the same)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# The broker's building blocks, shared by the single broker above and the N-broker cluster
# of infra/kafka_cluster.py: one set of jars, one JVM command line, one server.properties.


def resolve_kafka_jars(libs: Path) -> Path:
    """Copy the broker jars from Maven Central (cached in ~/.m2) into ``libs`` once."""
    marker = libs / ".resolved"
    pom = resources.files("infra").joinpath("kafka", "pom.xml")
    if marker.exists() and marker.read_text() == pom.read_text():
        return libs
    if shutil.which("mvn") is None:
        raise ServiceError("kafka: Maven (mvn) is needed to resolve the broker jars")
    libs.mkdir(parents=True, exist_ok=True)
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom_path),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise ServiceError(
            "kafka: mvn could not resolve the broker jars:\n"
            + result.stdout[-2000:]
            + result.stderr[-2000:]
        )
    marker.write_text(pom.read_text())
    return libs


def kafka_java(libs: Path, logs: Path, heap: str, *args: str) -> list[str]:
    """The JVM command line running a Kafka class from ``libs``, logging into ``logs``."""
    log4j = resources.files("infra").joinpath("kafka", "log4j.properties")
    return [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{libs}/*",
        *args,
    ]


def kafka_properties(
    *,
    node_id: int,
    port: int,
    controller_port: int,
    voters: str,
    data: Path,
    partitions: int,
    replication: int = 1,
    min_insync: int = 1,
) -> str:
    """server.properties of one combined broker+controller node on 127.0.0.1. ``voters``
    is the quorum (``1@127.0.0.1:19093,2@…``); ``replication``/``min_insync`` are the
    defaults of new topics and of Kafka's own (offsets, transactions): 1/1 for one broker,
    3/2 for a cluster of three, where no leader is ever elected from outside the ISR."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            f"num.partitions={partitions}",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_insync}",
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={replication}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={replication}",
            f"transaction.state.log.min.isr={min_insync}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=720",
            f"message.max.bytes={MESSAGE_MAX_BYTES}",
            "",
        ]
    )


def format_kafka_storage(
    libs: Path, logs: Path, heap: str, props: Path, data: Path, cluster_id: str
) -> None:
    """Format a node's KRaft storage once (a formatted ``data`` is left as it is)."""
    if (data / "meta.properties").exists():
        return
    result = subprocess.run(
        kafka_java(
            libs,
            logs,
            heap,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError("kafka: formatting storage failed:\n" + result.stdout + result.stderr)


def _apt_install(package: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(
            f"{package} is missing; install it with: sudo apt-get install -y {package}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


class Service(Protocol):
    """What ``dancu services`` drives: a single process (:class:`_Service`) or a local
    Kafka cluster (infra/kafka_cluster.py)."""

    name: str

    def start(self, timeout: float = ...) -> ServiceStatus: ...

    def stop(self, timeout: float = ...) -> ServiceStatus: ...

    def status(self) -> ServiceStatus: ...


def _redis_service(settings: Settings) -> Service:
    if settings.redis.cluster:  # REDIS_CLUSTER=1: three masters instead of one server
        from infra.redis_cluster import RedisClusterService  # it builds on this module

        return RedisClusterService(settings)
    return RedisService(settings)


def services(settings: Settings) -> list[Service]:
    if settings.kafka.brokers > 1:
        from infra.kafka_cluster import KafkaClusterService  # it builds on this module

        return [KafkaClusterService(settings), _redis_service(settings)]
    return [KafkaService(settings), _redis_service(settings)]


def start_all(settings: Settings) -> list[ServiceStatus]:
    return [s.start() for s in services(settings)]


def stop_all(settings: Settings) -> list[ServiceStatus]:
    return [s.stop() for s in reversed(services(settings))]


def status_all(settings: Settings) -> list[ServiceStatus]:
    return [s.status() for s in services(settings)]
