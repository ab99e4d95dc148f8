"""``POST /v1/checkins``: a resident's phone scanned a checkpoint's poster and sends its
text with the resident's ID (or the text of their card's QR code) → a scan with
``source: "self"`` on Kafka ``scans``, exactly as ``POST /v1/scans`` produces one.

Phones hold no dancu credential: the poster's signature is the proof of presence, so the
route is open without one (api/access.py ``SELF_SIGNED``), braked per client address
(api/ratelimit.py). A kiosk may call it with its device credentials instead (then for
its own checkpoints only, and unbraked). A resend is harmless: the scan ID is derived
from the checkpoint, the person and the phone's ``checkin_id`` (else the minute).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError, model_validator

from api.access import check_checkpoint
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from api.ratelimit import TokenBuckets
from api.routes.checkpoints import NotFound
from api.routes.posters import key_of
from infra import topics
from infra.credentials import Principal
from infra.metrics import SCANS_ACCEPTED
from registry.cccd import parse_cccd
from registry.errors import InvalidQrPayload, quote
from registry.posters import PosterError, read_poster_payload
from tracing.events import VN_TZ, Timestamp, validate_scan, validation_errors

router = APIRouter(prefix="/v1", tags=["scans"])


class PosterRefused(ApiError):
    """A forged or altered poster: the request is understood and refused (not retried)."""

    status_code = 403


class CheckinCreate(BaseModel):
    poster: str = Field(max_length=256, description="the poster's QR text, as scanned")
    person_id: str | None = Field(default=None, max_length=12)
    qr: str | None = Field(default=None, max_length=1024, description="the CCCD card's QR text")
    ts: Timestamp | None = Field(default=None, description="when; default: now")
    t_out: Timestamp | None = None
    checkin_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="the phone's own ID of this check-in: a resend with it is harmless",
    )

    @model_validator(mode="after")
    def _one_person(self) -> CheckinCreate:
        if (self.person_id is None) == (self.qr is None):
            raise ValueError("send the resident's person_id or the card's qr (one of them)")
        return self


class CheckinAccepted(BaseModel):
    scan_id: str
    checkpoint_id: str


def scan_id_of(checkpoint_id: str, person_id: str, ts: datetime, checkin_id: str | None) -> str:
    """A stable scan ID: the same check-in sent twice is one visit. Keyed by the phone's
    ``checkin_id`` when sent (never by it alone: one phone cannot shadow another's scan),
    else by the minute."""
    tag = checkin_id if checkin_id is not None else f"@{ts.astimezone(UTC):%Y%m%d%H%M}"
    digest = hashlib.sha256(f"{checkpoint_id}|{person_id}|{tag}".encode()).hexdigest()
    return f"self-{digest[:32]}"


def _principal(request: Request) -> Principal | None:
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


def _limiter(request: Request, clients: ClientsDep) -> TokenBuckets:
    buckets: TokenBuckets | None = getattr(request.app.state, "checkin_buckets", None)
    if buckets is None:
        s = clients.settings
        buckets = TokenBuckets(s.checkin_burst, s.checkin_rate)
        request.app.state.checkin_buckets = buckets
    return buckets


@router.post(
    "/checkins",
    status_code=202,
    response_model=CheckinAccepted,
    # the body is read by hand (after the rate limit), so its schema is declared here
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CheckinCreate.model_json_schema()}},
        }
    },
)
async def post_checkin(request: Request, clients: ClientsDep) -> CheckinAccepted:
    """A self check-in from a scanned poster (no credential needed; a kiosk device may
    sign it). 403 for a forged or altered poster, 404 for an unregistered checkpoint,
    422 for a bad ID or card QR, 429 when this address sends too many."""
    principal = _principal(request)
    if principal is None:
        client = request.client.host if request.client else "unknown"
        _limiter(request, clients).take(client, "check-ins")
    try:
        raw = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"body is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadInput('body must be a JSON object: {"poster": ..., "person_id" or "qr": ...}')
    try:
        body = CheckinCreate.model_validate(raw)
    except ValidationError as exc:
        raise BadInput("; ".join(validation_errors(exc))) from None
    try:
        poster = read_poster_payload(key_of(request, clients), body.poster)
    except PosterError as exc:
        if exc.problem == "signature":
            raise PosterRefused(f"poster refused: {exc}") from None
        raise BadInput(f"poster: {exc}") from None
    checkpoint_id = poster.checkpoint_id
    if principal is not None:
        check_checkpoint(principal, [checkpoint_id])
    if body.qr is not None:
        try:
            person_id = parse_cccd(body.qr).id
        except InvalidQrPayload as exc:
            raise BadInput(f"qr: {exc}") from None
    else:
        person_id = body.person_id or ""
    known = (await clients.checkpoints.lookup([checkpoint_id])).get(checkpoint_id)
    if not known:
        raise NotFound(f"checkpoint {quote(checkpoint_id)} is not registered")
    now = datetime.now(UTC)
    ts = body.ts or now
    if ts.astimezone(VN_TZ).date() < poster.issued - timedelta(days=1):  # a day of clock slack
        raise BadInput(f"ts: {ts.isoformat()} is before the poster was printed")
    item: dict[str, object] = {
        "scan_id": scan_id_of(checkpoint_id, person_id, ts, body.checkin_id),
        "person_id": person_id,
        "checkpoint_id": checkpoint_id,
        "ts": ts.isoformat(),
        "source": "self",
    }
    if body.t_out is not None:
        item["t_out"] = body.t_out.isoformat()
    scan, errors = validate_scan(item, now, timedelta(days=clients.settings.visit_window_days))
    if scan is None:
        raise BadInput("; ".join(errors))
    payload = orjson.dumps(scan.model_dump(mode="json", exclude_none=True))
    topic = clients.settings.topic(topics.SCANS)
    await (await clients.producer.send(topic, payload, key=checkpoint_id.encode()))
    SCANS_ACCEPTED.inc()
    return CheckinAccepted(scan_id=scan.scan_id, checkpoint_id=checkpoint_id)
