"""GET /metrics: Prometheus's scrape, behind a token of its own (``DANCU_METRICS_TOKEN``, or
``<data_dir>/metrics.token``): a monitoring system holds no person's or device's
credential, and none of theirs opens this. See infra/metrics.py for what is counted."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from api.deps import ClientsDep
from infra.metrics import render, store_families

router = APIRouter(tags=["operations"])

_REFUSED = {
    "error": "metrics need 'Authorization: Bearer <metrics token>' "
    "(DANCU_METRICS_TOKEN, or the file metrics.token in the data directory)"
}


def _authorised(request: Request) -> bool:
    expected: str | None = getattr(request.app.state, "metrics_token", None)
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, clients: ClientsDep) -> Response:
    """This process's counters and histograms, and the worker's figures from Kafka and
    Redis, in the Prometheus text format."""
    if not _authorised(request):
        return JSONResponse(
            _REFUSED, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'}
        )
    body = render(
        await store_families(clients.lag, clients.index, sink_group=clients.settings.sink_group)
    )
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
