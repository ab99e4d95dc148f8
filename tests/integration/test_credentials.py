"""People's tokens and devices' keys in the real Redis: hashed at rest, expiring,
revocable; signatures used once."""

from __future__ import annotations

import uuid

import pytest

from infra.auth import token_hash
from infra.credentials import Credentials, Principal
from infra.redis_store import make_redis
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def test_tokens_devices_and_replays(base_settings: Settings) -> None:
    redis = make_redis(base_settings.redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    creds = Credentials(redis, prefix)
    tkey = device_id = ""
    try:
        token, _ = await creds.add_user("lan", "official", "Ba Đình", days=30)
        who = await creds.person(token)
        assert who is not None and (who.role, who.district) == ("official", "Ba Đình")
        tkey = f"{prefix}auth:token:{token_hash(token)}"
        stored = await redis.hgetall(tkey)
        assert stored and token not in str(stored)  # only its hash is stored
        assert 0 < await redis.ttl(tkey) <= 30 * 86400  # the key expires with the token
        assert await creds.person(token + "x") is None
        # expired (the stored expiry in the past) and revoked tokens are refused
        await redis.hset(tkey, "expires_at", "2021-01-01T00:00:00+00:00")
        assert await creds.person(token) is None
        assert not await creds.active("lan")  # its only token has expired
        second, _ = await creds.add_user("lan", "official", "Ba Đình")
        holder = await creds.person(second)
        assert holder is not None and await creds.still_valid(holder)
        assert await creds.active("lan")
        assert await creds.revoke_user("lan") == 2 and await creds.person(second) is None
        assert not await creds.still_valid(holder) and not await creds.active("lan")
        with pytest.raises(ValueError, match="district"):
            await creds.add_user("an", "official")
        with pytest.raises(ValueError, match="role"):
            await creds.add_user("an", "device")

        device_id, key = await creds.add_device("cp-1")
        assert await creds.device(device_id) == (frozenset({"cp-1"}), key)
        gate = Principal(device_id, "device", checkpoints=frozenset({"cp-1"}))
        assert await creds.still_valid(gate)
        assert await creds.revoke_device(device_id) and await creds.device(device_id) is None
        assert not await creds.still_valid(gate)
        assert not await creds.revoke_device("dev-nope")
        assert await creds.first_use("sig-1") and not await creds.first_use("sig-1")
    finally:
        keys = [tkey, f"{prefix}auth:seen:sig-1", f"{prefix}auth:user:lan"]
        await redis.delete(*keys, f"{prefix}auth:device:{device_id}")
        await redis.aclose()
