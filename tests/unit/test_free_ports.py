"""Ports for servers started later (test platforms, cluster nodes, restarted brokers) are
chosen below the kernel's ephemeral range, so no outgoing connection can take one first."""

from __future__ import annotations

import socket

from infra.redis_cluster import free_ports as redis_ports
from infra.services import ephemeral_floor, free_ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(20_000 <= p < ephemeral_floor() for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_taken_port_is_never_chosen() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", taken + 1))  # its neighbour is free (else this fails)
        assert all(free_ports(1, low=taken, high=taken + 2) == [taken + 1] for _ in range(5))


def test_redis_cluster_ports_keep_their_bus_ports_below_the_range_too() -> None:
    ports = redis_ports(3)
    assert all(p + 10_000 < ephemeral_floor() for p in ports)
