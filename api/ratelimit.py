"""A per-client token bucket, in process: the brake on a route anyone may call (``POST
/v1/checkins``, which phones reach with no credential). Each client (its IP address) may
send ``burst`` requests at once, then ``rate`` a second; beyond that, 429 with
``Retry-After``. Bounded: the least recently seen clients are forgotten first, so a spray
of addresses cannot grow it.

Per address, and addresses are shared: a mobile carrier's NAT puts many phones behind one,
so the defaults are generous (a flood, not a busy shop, is what it stops). Behind a
reverse proxy every client has the proxy's address: set the limit there instead.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.exceptions import HTTPException


class TokenBuckets:
    def __init__(
        self,
        burst: int,
        rate: float,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def wait(self, client: str) -> float:
        """Take a token for ``client``: 0 when granted, else the seconds until one is."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        granted = tokens >= 1
        self._buckets[client] = (tokens - 1 if granted else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return 0.0 if granted else (1 - tokens) / self.rate

    def take(self, client: str, what: str) -> None:
        """Raise 429 with ``Retry-After`` when ``client`` is over its limit (the app's
        handler answers ``{"error": ...}`` and keeps the header)."""
        delay = self.wait(client)
        if delay:
            seconds = max(1, math.ceil(delay))
            raise HTTPException(
                429,
                f"too many {what} from this address; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
