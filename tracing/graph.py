"""The contact graph (networkx), pure: one directed graph of people (pseudonymous keys)
whose edges carry the evidence (checkpoint and overlap, or household), built from the
exposures of many reports. F0s joined through shared F1s or shared places form one
cluster; a checkpoint with at least two F0 visits within 7 days is a hotspot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import networkx as nx

from tracing.exposure import Exposure
from tracing.visits import Visit

HOTSPOT_WINDOW = timedelta(days=7)
HOTSPOT_CASES = 2


def contact_graph(cases: dict[str, str], exposures: Iterable[Exposure]) -> nx.DiGraph:
    """Nodes are people with their tier ("F0" beats "F1" beats "F2"); an edge source →
    exposed person carries report, reason, checkpoint, overlap and minutes."""
    rank = {"F0": 0, "F1": 1, "F2": 2}
    g = nx.DiGraph()

    def person(key: str, tier: str) -> None:
        if key not in g or rank[tier] < rank[g.nodes[key]["tier"]]:
            g.add_node(key, tier=tier)

    for report_id, key in cases.items():
        person(key, "F0")
        g.nodes[key].setdefault("reports", []).append(report_id)
    for e in exposures:
        person(e.via, "F0" if e.tier == "F1" else "F1")
        person(e.person_key, e.tier)
        g.add_edge(
            e.via,
            e.person_key,
            report_id=e.report_id,
            reason=e.reason,
            checkpoint_id=e.checkpoint_id,
            overlap_start=e.overlap_start.isoformat(),
            overlap_end=e.overlap_end.isoformat(),
            minutes=round(e.overlap_minutes, 1),
        )
    return g


@dataclass(frozen=True, slots=True)
class Cluster:
    cluster_id: str
    cases: tuple[str, ...]  # F0 person keys
    people: int
    checkpoints: tuple[str, ...]


def cluster_id(first_case: str) -> str:
    """A cluster's name, from its first F0's pseudonym: split, so that no run of it can
    read as a 12-digit personal ID (a hex pseudonym is sometimes all digits)."""
    return f"c-{first_case[:6]}-{first_case[6:12]}"


def clusters(g: nx.DiGraph, case_visits: Iterable[Visit]) -> list[Cluster]:
    """F0s joined through shared F1s (the graph) or shared places (checkpoints they
    visited) form one cluster; a lone F0 is a cluster of one."""
    u = nx.Graph(g.to_undirected())
    for v in case_visits:
        u.add_edge(v.person_key, f"cp:{v.checkpoint_id}")
    out = []
    for component in nx.connected_components(u):
        cases = sorted(n for n in component if g.has_node(n) and g.nodes[n]["tier"] == "F0")
        if not cases:
            continue
        places = sorted(n[3:] for n in component if str(n).startswith("cp:"))
        people = sum(1 for n in component if not str(n).startswith("cp:"))
        out.append(Cluster(cluster_id(cases[0]), tuple(cases), people, tuple(places)))
    return sorted(out, key=lambda c: (-len(c.cases), c.cluster_id))


@dataclass(frozen=True, slots=True)
class Hotspot:
    checkpoint_id: str
    cases: tuple[str, ...]
    first_visit: str
    last_visit: str


def hotspots(case_visits: Iterable[Visit]) -> list[Hotspot]:
    """Checkpoints with at least two different F0s' visits within 7 days."""
    by_cp: dict[str, list[Visit]] = {}
    for v in case_visits:
        by_cp.setdefault(v.checkpoint_id, []).append(v)
    out = []
    for cp, visits in by_cp.items():
        visits.sort(key=lambda v: v.t_in)
        for i, first in enumerate(visits):
            within = [v for v in visits[i:] if v.t_in - first.t_in <= HOTSPOT_WINDOW]
            people = sorted({v.person_key for v in within})
            if len(people) >= HOTSPOT_CASES:
                out.append(
                    Hotspot(cp, tuple(people), first.t_in.isoformat(), within[-1].t_in.isoformat())
                )
                break
    return sorted(out, key=lambda h: (-len(h.cases), h.checkpoint_id))


@dataclass(frozen=True, slots=True)
class Outbreak:
    """The contact graph of every active report, its clusters and hotspots."""

    graph: nx.DiGraph
    clusters: list[Cluster]
    hotspots: list[Hotspot]

    def cluster_graph(self, cluster_id: str) -> dict[str, list[dict[str, object]]] | None:
        """Nodes and edges of one cluster (pseudonymous keys), for the dashboard."""
        cluster = next((c for c in self.clusters if c.cluster_id == cluster_id), None)
        if cluster is None:
            return None
        u = self.graph.to_undirected(as_view=True)
        people: set[str] = set()
        for case in cluster.cases:
            people |= nx.node_connected_component(u, case)
        sub = self.graph.subgraph(people)
        nodes = [
            {"id": n, "tier": d["tier"], "reports": sorted(d.get("reports", []))}
            for n, d in sorted(sub.nodes(data=True))
        ]
        edges = [{"source": a, "target": b, **d} for a, b, d in sorted(sub.edges(data=True))]
        places = [
            {"id": f"cp:{cp}", "checkpoint_id": cp, "tier": "place"} for cp in cluster.checkpoints
        ]
        return {"nodes": nodes + places, "edges": edges}


def outbreak(
    cases: dict[str, str], exposures: Iterable[Exposure], case_visits: Iterable[Visit]
) -> Outbreak:
    visits = list(case_visits)
    g = contact_graph(cases, exposures)
    return Outbreak(g, clusters(g, visits), hotspots(visits))
