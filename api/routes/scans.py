"""POST /v1/scans: one scan or a device batch → Kafka ``scans``.

Every item is validated; good items are produced (grouped per checkpoint, one record
per group), bad ones are reported by index. All bad → 422.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.access import PrincipalDep, check_checkpoint
from api.deps import ClientsDep
from api.errors import BadInput, TooLarge
from infra import topics
from infra.metrics import SCANS_ACCEPTED
from tracing.events import MAX_SCAN_AGE, ScanRecorded, validate_scan

router = APIRouter(prefix="/v1", tags=["scans"])
MAX_BATCH = 10_000


class ScanRejected(BaseModel):
    index: int
    scan_id: str | None
    errors: list[str]


class ScansAccepted(BaseModel):
    accepted: int
    rejected: list[ScanRejected]


def parse_scans(
    body: object, now: datetime, max_age: timedelta = MAX_SCAN_AGE
) -> tuple[list[ScanRecorded], list[ScanRejected]]:
    if isinstance(body, dict) and isinstance(body.get("scans"), list):
        items = body["scans"]
    elif isinstance(body, list):
        items = body
    elif isinstance(body, dict):
        items = [body]
    else:
        raise BadInput('body must be a scan object, a list of scans, or {"scans": [...]}')
    if not items:
        raise BadInput("no scans in the body")
    if len(items) > MAX_BATCH:
        raise TooLarge(f"at most {MAX_BATCH} scans per request, got {len(items)}")
    good: list[ScanRecorded] = []
    bad: list[ScanRejected] = []
    for i, item in enumerate(items):
        scan, errors = validate_scan(item, now, max_age)
        if scan is None:
            sid = item.get("scan_id") if isinstance(item, dict) else None
            # Only a short prefix of a bad scan_id is echoed back, and only a plain value.
            echo = str(sid)[:64] if isinstance(sid, str | int) and sid != "" else None
            bad.append(ScanRejected(index=i, scan_id=echo, errors=errors))
        else:
            good.append(scan)
    return good, bad


@router.post("/scans", status_code=202, response_model=ScansAccepted)
async def post_scans(
    request: Request, clients: ClientsDep, principal: PrincipalDep
) -> ScansAccepted:
    """Scans from a checkpoint device (for its own checkpoints only: a batch naming another
    checkpoint is refused whole, 403)."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"body is not valid JSON: {exc}") from exc
    max_age = timedelta(days=clients.settings.visit_window_days)
    good, bad = parse_scans(body, datetime.now(UTC), max_age)
    if not good:
        raise BadInput("no valid scan in the request", details=[b.model_dump() for b in bad])
    check_checkpoint(principal, {s.checkpoint_id for s in good})
    groups: dict[str, list[dict[str, object]]] = defaultdict(list)
    for s in good:
        groups[s.checkpoint_id].append(s.model_dump(mode="json", exclude_none=True))
    topic = clients.settings.topic(topics.SCANS)
    futures = []
    for checkpoint_id, scans in groups.items():
        payload = orjson.dumps(scans[0] if len(scans) == 1 else scans)
        futures.append(await clients.producer.send(topic, payload, key=checkpoint_id.encode()))
    await asyncio.gather(*futures)  # durable in Kafka before we answer
    SCANS_ACCEPTED.inc(len(good))
    return ScansAccepted(accepted=len(good), rejected=bad)
