"""A TCP proxy a test controls, to partition processes from a server (Redis).

Clients connect to :attr:`Proxy.port`; each connection is forwarded to the target.
:meth:`Proxy.cut` partitions: the connections of the chosen processes (or all) are
dropped at once (RST), and new ones from them are either refused (accepted, then reset)
or blackholed (accepted and held silent: what a client meets across a real partition,
a connect that succeeds and commands that never answer). :meth:`Proxy.restore` ends the
partition: held connections are reset (their clients reconnect) and new ones flow again.

Which process a connection comes from is read from Linux's ``/proc``: the peer's socket
inode in ``/proc/net/tcp``, then the processes holding it (``/proc/<pid>/fd``). So one
worker can be cut off while the API process beside it, on the same URL, still talks to
the server.

It runs its own event loop in a daemon thread; every method is safe from the test's
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Mode = Literal["blackhole", "refuse"]
T = TypeVar("T")


@dataclass(eq=False)  # kept in a set: by identity
class _Conn:
    peer_port: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    held: bool = False


@dataclass
class _Cut:
    pids: frozenset[int] | None  # None: every client
    mode: Mode


@dataclass
class ProxyCounts:
    accepted: int = 0  # connections forwarded
    dropped: int = 0  # live connections reset by a cut
    refused: int = 0  # new connections reset during a cut
    held: int = 0  # new connections blackholed during a cut
    spared: int = 0  # new connections during a cut from processes not cut off


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.counts = ProxyCounts()
        self._cut: _Cut | None = None
        self._live: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    # --- control (from the test's thread) -------------------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self, pids: Collection[int] | None = None, mode: Mode = "blackhole") -> int:
        """Partition ``pids`` (every client when None) from the target; returns how many
        live connections were dropped."""

        async def go() -> int:
            self._cut = _Cut(frozenset(pids) if pids is not None else None, mode)
            owned = _socket_inodes(self._cut.pids)
            dropped = 0
            for conn in list(self._live):
                if self._matches(conn.peer_port, owned):
                    dropped += 1
                    self._reset(conn)
            self.counts.dropped += dropped
            return dropped

        return self._call(go())

    def restore(self) -> int:
        """End the partition; returns how many held connections were reset."""

        async def go() -> int:
            self._cut = None
            held = [c for c in self._live if c.held]
            for conn in held:
                self._reset(conn)
            return len(held)

        return self._call(go())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def go() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._live):
                self._reset(conn)

        with contextlib.suppress(Exception):
            self._call(go())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # --- the loop's side -------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(int(writer.get_extra_info("peername")[1]), writer)
        cut = self._cut
        if cut is not None and self._matches(conn.peer_port, _socket_inodes(cut.pids)):
            if cut.mode == "refuse":
                self.counts.refused += 1
                self._reset(conn)
                return
            self.counts.held += 1
            conn.held = True
            self._live.add(conn)
            with contextlib.suppress(OSError, ConnectionError):
                while await reader.read(65536):
                    pass  # swallowed: nothing reaches the server, nothing comes back
            self._live.discard(conn)
            return
        if cut is not None:
            self.counts.spared += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(conn)
            return
        conn.upstream = up_writer
        self.counts.accepted += 1
        self._live.add(conn)
        try:
            await asyncio.gather(
                _pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._live.discard(conn)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    def _matches(self, peer_port: int, owned: set[int] | None) -> bool:
        """Whether the client on ``peer_port`` is cut off (``owned``: the socket inodes of
        the processes cut off; None: everyone is)."""
        if owned is None:
            return True
        inode = _peer_inode(peer_port, self.port)
        return inode is not None and inode in owned

    def _reset(self, conn: _Conn) -> None:
        self._live.discard(conn)
        for w in (conn.client, conn.upstream):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


# --- who holds a socket: /proc -------------------------------------------------------


def _peer_inode(peer_port: int, proxy_port: int) -> int | None:
    """The inode of the client socket 127.0.0.1:peer_port → the proxy's port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, inode = parts[1], parts[2], parts[9]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == peer_port
                        and int(remote.rsplit(":", 1)[1], 16) == proxy_port
                    ):
                        return int(inode)
        except OSError:
            continue
    return None


def _socket_inodes(pids: Collection[int] | None) -> set[int] | None:
    """The inodes of every socket the processes ``pids`` hold (None: no filter)."""
    if pids is None:
        return None
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes
