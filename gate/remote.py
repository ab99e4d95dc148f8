"""The gate's two calls to the platform, signed with the device's key: a gate check
(``POST /v1/gate/check``) and a batch of scans (``POST /v1/scans``).

Unreachable means the platform could not answer: no connection, a timeout, a broken
response, 5xx (503 included) or 429 (overloaded). Then the gate decides by its offline
policy and keeps the scans on disk. Any other answer is the platform's word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import httpx

Source = Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Literal["allow", "deny"]
    colour: str
    reasons: list[str]
    source: Source


@dataclass(frozen=True, slots=True)
class Unreachable:
    why: str


@dataclass(frozen=True, slots=True)
class ScansAnswer:
    """What became of a batch: ``acked`` (sent, the platform holds them), ``rejected``
    (scan_id → errors, refused for good), or ``retry`` with why (keep and back off)."""

    acked: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    retry: str = ""


def unavailable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:200]


def _transport_why(exc: httpx.TransportError) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    return f"{kind}: {text}"[:200]


class GateRemote:
    """The platform as the gate sees it, over one signed httpx client."""

    def __init__(self, http: httpx.AsyncClient, checkpoint_id: str, check_timeout: float = 2.0):
        self.http = http
        self.checkpoint_id = checkpoint_id
        self.check_timeout = check_timeout

    async def check(self, qr: str) -> Verdict | Unreachable:
        """The platform's decision on a card's QR text, or why it could not give one."""
        body = {"checkpoint_id": self.checkpoint_id, "qr": qr}
        try:
            r = await self.http.post("/v1/gate/check", json=body, timeout=self.check_timeout)
        except httpx.TransportError as exc:
            return Unreachable(_transport_why(exc))
        if unavailable(r.status_code):
            return Unreachable(f"the platform answered {r.status_code}: {_error_text(r)}")
        if r.status_code != 200:
            # The platform's word (a card it refuses, a device it does not know): deny.
            why = f"the platform refused the check ({r.status_code}): {_error_text(r)}"
            return Verdict("deny", "none", [why], "online")
        try:
            data = r.json()
        except ValueError:
            return Unreachable("the platform's answer is not JSON")
        if not isinstance(data, dict):
            return Unreachable("the platform's answer is not a decision")
        return Verdict(
            "allow" if data.get("decision") == "allow" else "deny",
            str(data.get("colour", "none")),
            [str(x) for x in data.get("reasons", [])],
            "online",
        )

    async def send_scans(
        self, scans: list[dict[str, object]], timeout: float = 15.0
    ) -> ScansAnswer:
        """Post a batch in its order; what the platform did with each scan."""
        ids = [str(s["scan_id"]) for s in scans]
        try:
            r = await self.http.post("/v1/scans", json={"scans": scans}, timeout=timeout)
        except httpx.TransportError as exc:
            return ScansAnswer(retry=_transport_why(exc))
        if unavailable(r.status_code):
            return ScansAnswer(retry=f"the platform answered {r.status_code}: {_error_text(r)}")
        if r.status_code in (400, 422):
            # Every scan of the batch is invalid (say, older than the tracing retention):
            # the platform will never take them, so they leave the queue with the reasons.
            # Only when the answer names the scans' problems: a 400 without them (a proxy,
            # a limit) says nothing about the scans, which are kept and retried.
            details = _rejections(r)
            if not details:
                return ScansAnswer(
                    retry=f"the platform refused the batch ({r.status_code}): {_error_text(r)}"
                )
            why = _error_text(r)
            return ScansAnswer(rejected={sid: details.get(i, why) for i, sid in enumerate(ids)})
        if r.status_code != 202:
            # 401/403/404/413…: the device or its configuration is wrong, not the scans.
            # Keep them: an operator fixes the key and they go.
            return ScansAnswer(
                retry=f"the platform refused the scans ({r.status_code}): {_error_text(r)}"
            )
        bad = _rejections(r, key="rejected")
        return ScansAnswer(
            acked=[sid for i, sid in enumerate(ids) if i not in bad],
            rejected={ids[i]: why for i, why in bad.items() if i < len(ids)},
        )


def _rejections(r: httpx.Response, key: str = "details") -> dict[int, str]:
    """index → errors from a scans answer's rejected list (202) or error details (422)."""
    try:
        body = r.json()
    except ValueError:
        return {}
    items = body.get(key) if isinstance(body, dict) else None
    out: dict[int, str] = {}
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            out[item["index"]] = "; ".join(str(e) for e in item.get("errors", []))
    return out
