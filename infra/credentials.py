"""People's API tokens and devices' signing keys in Redis (the access issue's store).

Keys (under ``Settings.redis_prefix``):
- ``auth:token:<sha256>`` hash: name, role, district, expires_at (the token itself is
  never stored; the key expires with the token); ``auth:user:<name>`` the set of its
  token hashes (revoking a user revokes them all)
- ``auth:device:<device_id>`` hash: checkpoint_id (one, or several joined by commas for a
  site's gateway), key, created_at, revoked
- ``auth:seen:<signature>`` a signature already used (kept twice the allowed skew)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from infra.auth import MAX_SKEW_S, ROLES, new_device_key, new_token, token_hash


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    district: str = ""  # an official's district
    checkpoints: frozenset[str] = frozenset()  # a device's own checkpoints
    organisation: str = ""  # an owner's business or organisation
    credential: str = ""  # a person's token hash (to check it again on a long stream)


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Credentials:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix

    async def add_user(
        self,
        name: str,
        role: str,
        district: str = "",
        days: int = 90,
        organisation: str = "",
        seconds: int | None = None,
    ) -> tuple[str, datetime]:
        """A new token for a person (returned once): (token, expiry). ``seconds``: a
        short-lived token instead (the CLI's own calls to the API)."""
        if role not in ROLES or role == "device":
            raise ValueError(f"role: must be one of {', '.join(r for r in ROLES if r != 'device')}")
        if role == "official" and not district:
            raise ValueError("district: an official works for one district")
        if role == "owner" and not organisation:
            raise ValueError("organisation: an owner speaks for one business or organisation")
        if not 1 <= days <= 366:
            raise ValueError("days: a token lives 1 to 366 days")
        token = new_token()
        life = timedelta(seconds=seconds) if seconds is not None else timedelta(days=days)
        expires = datetime.now(UTC) + life
        key = f"{self.p}auth:token:{token_hash(token)}"
        fields = {
            "name": name,
            "role": role,
            "district": district,
            "organisation": organisation,
            "expires_at": expires.isoformat(),
        }
        # The user's list of tokens first, then the token (its fields and expiry in one
        # MULTI on its own key): the two keys are in different slots on a cluster, and in
        # this order a token is never in force unless revoking its user finds it.
        await self.r.sadd(f"{self.p}auth:user:{name}", token_hash(token))  # type: ignore[misc]
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expireat(key, expires)
            await pipe.execute()
        return token, expires

    async def revoke_user(self, name: str) -> int:
        """Revoke every token of a person: the tokens first (one key each, in their own
        slots), their list last, so a revocation cut short is finished by the next."""
        hashes = await self.r.smembers(f"{self.p}auth:user:{name}")  # type: ignore[misc]
        async with self.r.pipeline(transaction=False) as pipe:
            for h in hashes:
                pipe.delete(f"{self.p}auth:token:{_s(h)}")
            await pipe.execute()
        await self.r.delete(f"{self.p}auth:user:{name}")
        return len(hashes)

    async def person(self, token: str) -> Principal | None:
        """Who holds this token (None: unknown, revoked or expired)."""
        found = await self.r.hgetall(f"{self.p}auth:token:{token_hash(token)}")  # type: ignore[misc]
        if not found:
            return None
        f = {_s(k): _s(v) for k, v in found.items()}
        if datetime.fromisoformat(f["expires_at"]) <= datetime.now(UTC):
            return None
        return Principal(
            f["name"],
            f["role"],
            f.get("district", ""),
            organisation=f.get("organisation", ""),
            credential=token_hash(token),
        )

    async def still_valid(self, who: Principal) -> bool:
        """Is this caller's credential still in force (not revoked, not expired)? For a
        stream that outlives the request that opened it."""
        if who.role == "device":
            return await self.device(who.name) is not None
        found = await self.r.hget(f"{self.p}auth:token:{who.credential}", "expires_at")  # type: ignore[misc]
        return found is not None and datetime.fromisoformat(_s(found)) > datetime.now(UTC)

    async def active(self, name: str) -> bool:
        """Does this person hold a token in force (a webhook they registered keeps
        delivering only while they do)?"""
        hashes = await self.r.smembers(f"{self.p}auth:user:{name}")  # type: ignore[misc]
        if not hashes:
            return False
        async with self.r.pipeline(transaction=False) as pipe:
            for h in hashes:
                pipe.hget(f"{self.p}auth:token:{_s(h)}", "expires_at")
            found = await pipe.execute()
        now = datetime.now(UTC)
        return any(f is not None and datetime.fromisoformat(_s(f)) > now for f in found)

    async def add_device(self, *checkpoint_ids: str) -> tuple[str, str]:
        """A new device for a checkpoint (or a site's gateway for several): (device_id,
        signing key), the key shown once."""
        if not checkpoint_ids or any(not c or "," in c for c in checkpoint_ids):
            raise ValueError("checkpoint_id: name at least one checkpoint (no commas)")
        device_id = f"dev-{new_device_key()[:12]}"
        key = new_device_key()
        await self.r.hset(  # type: ignore[misc]
            f"{self.p}auth:device:{device_id}",
            mapping={
                "checkpoint_id": ",".join(checkpoint_ids),
                "key": key,
                "created_at": datetime.now(UTC).isoformat(),
                "revoked": "0",
            },
        )
        return device_id, key

    async def revoke_device(self, device_id: str) -> bool:
        """False when there is no such device."""
        key = f"{self.p}auth:device:{device_id}"
        if not await self.r.exists(key):
            return False
        await self.r.hset(key, "revoked", "1")  # type: ignore[misc]
        return True

    async def device(self, device_id: str) -> tuple[frozenset[str], str] | None:
        """(its checkpoints, key) of a device in service."""
        found = await self.r.hgetall(f"{self.p}auth:device:{device_id}")  # type: ignore[misc]
        f = {_s(k): _s(v) for k, v in found.items()}
        if not f or f.get("revoked") == "1":
            return None
        return frozenset(f["checkpoint_id"].split(",")), f["key"]

    async def first_use(self, signature: str) -> bool:
        """True the first time a signature is seen (a replay gets False)."""
        return bool(
            await self.r.set(
                f"{self.p}auth:seen:{signature}", int(time.time()), nx=True, ex=2 * MAX_SKEW_S
            )
        )
