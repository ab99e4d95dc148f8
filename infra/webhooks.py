"""Webhooks: receivers registered by an audience (a district's officials, an
organisation), each with its own signing secret and its own cursor into the audience's
alert stream.

Keys (under ``Settings.redis_prefix``):
- ``webhook:{<id>}`` hash: webhook_id, scope, url, description, secret, created_by,
  created_role, created_at, cursor (the last stream entry the receiver acknowledged with
  a 2xx), delivered, attempts, last_error, last_attempt_at;
- ``webhooks`` the set of all webhook IDs, ``webhooks:s:<scope>`` those of one audience;
- ``webhook:{<id>}:lease`` the deliverer currently sending to it (one at a time, so two
  processes never send the same alert twice). The hash tag keeps it in the hash's slot:
  the cursor moves in one script that checks the lease (a Redis Cluster too).

Receivers check ``X-Dancu-Signature: sha256=<hex HMAC-SHA256 of the body with the
secret>``; ``X-Dancu-Event-Id`` is the alert stream's entry ID, the same on every retry.

**Where a webhook may point (SSRF).** A webhook makes dancu send requests on a user's
behalf, so a URL could aim at the machine's own services or a private network. Only
``http(s)`` URLs without credentials are accepted, and the host must resolve to public
addresses only, unless it (or its network) is on the allow-list
(``DANCU_WEBHOOK_ALLOW``: hosts or networks, comma-separated; outside production it
defaults to the loopback addresses, so receivers on this machine work). The check runs at
registration and again before each delivery (a name may resolve elsewhere later).
Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

SIGNATURE_HEADER = "X-Dancu-Signature"
EVENT_HEADER = "X-Dancu-Event-Id"
WEBHOOK_HEADER = "X-Dancu-Webhook-Id"
MAX_PER_SCOPE = 10
LEASE_MS = 30_000

# Pure helpers -----------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """The ``X-Dancu-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """A receiver's check (constant time)."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempt``-th failure (0-based): doubling from
    ``base``, never more than ``cap``."""
    if attempt < 0:
        raise ValueError("attempt: must be 0 or more")
    return float(min(cap, base * 2 ** min(attempt, 62)))


Resolver = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    """The addresses a host name resolves to (blocking: call it in a thread)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def _allowed(entries: Iterable[str]) -> tuple[set[str], list[Any]]:
    names: set[str] = set()
    networks: list[Any] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, networks


def url_problem(url: str, allow: Sequence[str], resolve: Resolver = resolve_host) -> str | None:
    """Why a webhook may not point at ``url`` (None: it may). See the module's notes."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"url: not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "url: only http and https receivers are allowed"
    if not parts.hostname:
        return "url: names no host"
    if parts.username or parts.password:
        return "url: must not carry credentials (the signature authenticates dancu)"
    if port == 0:
        return "url: port 0 is not a receiver"
    host = parts.hostname.lower().rstrip(".")
    names, networks = _allowed(allow)
    if host in names:
        return None
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host)]
        except (OSError, UnicodeError) as exc:
            return f"url: host {host!r} cannot be resolved ({exc})"
        if not addresses:
            return f"url: host {host!r} resolves to no address"
    for a in addresses:
        if any(a in n for n in networks):
            continue
        if not a.is_global:
            return (
                f"url: {host!r} is a private, loopback or reserved address ({a}); "
                "an administrator may allow it with DANCU_WEBHOOK_ALLOW"
            )
    return None


# The store --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: str
    scope: str
    url: str
    description: str
    secret: str
    created_by: str
    created_role: str
    created_at: str
    cursor: str
    delivered: int = 0
    attempts: int = 0
    last_error: str = ""
    last_attempt_at: str = ""

    def public(self) -> dict[str, object]:
        """What its audience sees (never the secret)."""
        return {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "delivered": self.delivered,
            "last_event_id": self.cursor,
            "failing_attempts": self.attempts,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
        }


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_ADVANCE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2], 'attempts', '0', 'last_error', '',
  'last_attempt_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'delivered', 1)
return 1
"""

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'attempts', ARGV[1], 'last_error', ARGV[2], 'last_attempt_at', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def webhook_keys(prefix: str, webhook_id: str) -> tuple[str, str]:
    """(hash, lease) of a webhook: one hash tag, so one slot."""
    return f"{prefix}webhook:{{{webhook_id}}}", f"{prefix}webhook:{{{webhook_id}}}:lease"


class WebhookStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix
        self._advance = redis.register_script(_ADVANCE)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._failed = redis.register_script(_FAILED)

    def _key(self, webhook_id: str) -> str:
        return webhook_keys(self.p, webhook_id)[0]

    def _scope(self, scope: str) -> str:
        return f"{self.p}webhooks:s:{scope}"

    async def add(
        self, scope: str, url: str, description: str, by: str, role: str, cursor: str
    ) -> Webhook:
        """A new receiver for ``scope``, sent what comes after ``cursor``."""
        if await self.r.scard(self._scope(scope)) >= MAX_PER_SCOPE:  # type: ignore[misc]
            raise ValueError(f"at most {MAX_PER_SCOPE} webhooks per audience; delete one first")
        hook = Webhook(
            webhook_id=f"wh-{uuid.uuid4().hex[:16]}",
            scope=scope,
            url=url,
            description=description,
            secret=secrets.token_urlsafe(32),
            created_by=by,
            created_role=role,
            created_at=datetime.now(UTC).isoformat(),
            cursor=cursor,
        )
        fields = {
            k: str(getattr(hook, k))
            for k in Webhook.__dataclass_fields__  # all plain values
        }
        # The hash, then the lists naming it (other slots on a cluster; idempotent adds):
        # a listed ID always has its webhook.
        await self.r.hset(self._key(hook.webhook_id), mapping=fields)  # type: ignore[misc,arg-type]
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.sadd(self._scope(scope), hook.webhook_id)
            pipe.sadd(f"{self.p}webhooks", hook.webhook_id)
            await pipe.execute()
        return hook

    async def get(self, webhook_id: str) -> Webhook | None:
        found = await self.r.hgetall(self._key(webhook_id))  # type: ignore[misc]
        if not found:
            return None
        f = {_s(k): _s(v) for k, v in found.items()}
        return Webhook(
            webhook_id=f["webhook_id"],
            scope=f["scope"],
            url=f["url"],
            description=f.get("description", ""),
            secret=f["secret"],
            created_by=f.get("created_by", ""),
            created_role=f.get("created_role", ""),
            created_at=f.get("created_at", ""),
            cursor=f.get("cursor") or "0-0",
            delivered=int(f.get("delivered") or 0),
            attempts=int(f.get("attempts") or 0),
            last_error=f.get("last_error", ""),
            last_attempt_at=f.get("last_attempt_at", ""),
        )

    async def of_scope(self, scope: str) -> list[Webhook]:
        ids = sorted(_s(i) for i in await self.r.smembers(self._scope(scope)))  # type: ignore[misc]
        found = [await self.get(i) for i in ids]
        return [h for h in found if h is not None]

    async def all_ids(self) -> list[str]:
        return sorted(_s(i) for i in await self.r.smembers(f"{self.p}webhooks"))  # type: ignore[misc]

    async def delete(self, hook: Webhook) -> None:
        """The hash first (delivery stops at once: the deliverer reads it), then the
        lists (other slots on a cluster); an ID listed without its hash is skipped."""
        await self.r.delete(self._key(hook.webhook_id))
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.srem(self._scope(hook.scope), hook.webhook_id)
            pipe.srem(f"{self.p}webhooks", hook.webhook_id)
            await pipe.execute()

    # The deliverer's side -----------------------------------------------------------------
    async def lease(self, webhook_id: str, token: str, ms: int = LEASE_MS) -> bool:
        """Take (or renew) the right to deliver to this webhook."""
        return bool(await self._lease(keys=[webhook_keys(self.p, webhook_id)[1]], args=[token, ms]))

    async def release(self, webhook_id: str, token: str) -> None:
        await self._release(keys=[webhook_keys(self.p, webhook_id)[1]], args=[token])

    async def advance(self, webhook_id: str, token: str, event_id: str) -> bool:
        """The receiver acknowledged ``event_id``: move the cursor past it (only while this
        deliverer still holds the lease)."""
        return bool(
            await self._advance(
                keys=list(webhook_keys(self.p, webhook_id)),
                args=[token, event_id, datetime.now(UTC).isoformat()],
            )
        )

    async def failed(self, webhook_id: str, attempts: int, error: str) -> None:
        """A delivery failed: shown on the webhook (unless it was deleted meanwhile)."""
        await self._failed(
            keys=[self._key(webhook_id)],
            args=[attempts, error[:300], datetime.now(UTC).isoformat()],
        )
