"""The alert store on the real Redis: a replayed decision adds nothing to the stream, a
withdrawal retracts, officials' steps are compare-and-set, venue alerts follow content,
and the webhook cursor moves only under the lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.alerts import AlertStore, StepRaced
from infra.redis_store import make_redis
from infra.settings import Settings
from infra.webhooks import WebhookStore
from tracing.alerts import exposure_alert, venue_alerts, withdrawal
from tracing.events import ExposureFlagged
from tracing.visits import Visit

pytestmark = pytest.mark.integration

AT = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def flag(person: str, **changes: object) -> ExposureFlagged:
    fields: dict[str, object] = {
        "exposure_id": f"{person:0>24}",
        "report_id": "r1",
        "person_key": f"pk-{person}",
        "tier": "F1",
        "via_key": "pk-A",
        "reason": "co-location",
        "checkpoint_id": "cp1",
        "district": "Ba Đình",
        "overlap_start": AT - timedelta(hours=1),
        "overlap_end": AT - timedelta(minutes=30),
        "overlap_minutes": 30.0,
        "rule_version": "moh-2021",
        "flagged_at": AT,
        "version": 3,
    }
    return ExposureFlagged(**{**fields, **changes})  # type: ignore[arg-type]


def run(base: Settings, test: Callable[[AlertStore, WebhookStore], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        redis = make_redis(base.redis_url)
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        try:
            return await test(
                AlertStore(redis, prefix, base.redis_url), WebhookStore(redis, prefix)
            )
        finally:
            async for key in redis.scan_iter(match=f"{prefix}*"):
                await redis.delete(key)
            await redis.aclose()

    return asyncio.run(go())


def drafts(*flags: ExposureFlagged) -> list[Any]:
    return [d for d in (exposure_alert(f) for f in flags) if d is not None]


def test_a_replayed_batch_adds_nothing(base_settings: Settings) -> None:
    async def test(alerts: AlertStore, _: WebhookStore) -> None:
        batch = drafts(flag("C"), flag("D"))
        assert len(await alerts.apply(batch)) == 2
        assert await alerts.apply(batch) == []  # the replay
        events = await alerts.after("d:Ba Đình", "0-0")
        assert [(e.alert_id, e.change, e.status) for e in events] == [
            (f"{'C':0>24}", "flagged", "open"),
            (f"{'D':0>24}", "flagged", "open"),
        ]
        # A correction (a later record) updates; its replay adds nothing.
        moved = drafts(flag("C", version=5, overlap_minutes=40.0))
        assert len(await alerts.apply(moved)) == 1
        assert await alerts.apply(moved) == []
        # A stale decision (an older record replayed after a newer one) changes nothing.
        assert await alerts.apply(drafts(flag("C", version=2, overlap_minutes=1.0))) == []
        c = await alerts.get(f"{'C':0>24}")
        assert c is not None and c.body["overlap_minutes"] == 40.0 and c.status == "open"
        # Withdrawn (the tracer sends no district then): retracted where the alert lives,
        # once; again is nothing, and so is a withdrawal of an alert never raised.
        gone = drafts(flag("D", version=6, withdrawn=True, district=""))
        assert await alerts.apply(drafts(flag("X", withdrawn=True, district=""))) == []
        assert len(await alerts.apply(gone)) == 1 and await alerts.apply(gone) == []
        changes = [e.change for e in await alerts.after("d:Ba Đình", "0-0")]
        assert changes == ["flagged", "flagged", "updated", "withdrawn"]
        assert await alerts.counts("d:Ba Đình") == {
            "open": 1,
            "acknowledged": 0,
            "closed": 0,
            "withdrawn": 1,
        }
        listed = await alerts.in_status("d:Ba Đình", "open", 10)
        assert [a.alert_id for a in listed] == [f"{'C':0>24}"]
        # Flagged again later: open again.
        back = drafts(flag("D", version=8))
        await alerts.apply(back)
        d = await alerts.get(f"{'D':0>24}", history=True)
        assert d is not None and d.status == "open"
        assert [h["change"] for h in d.history] == ["flagged", "withdrawn", "flagged"]

    run(base_settings, test)


def test_a_person_who_moved_is_withdrawn_there_and_flagged_here(base_settings: Settings) -> None:
    async def test(alerts: AlertStore, _: WebhookStore) -> None:
        await alerts.apply(drafts(flag("C")))
        await alerts.apply(drafts(flag("C", version=4, district="Hoàn Kiếm")))
        old = [(e.change, e.status) for e in await alerts.after("d:Ba Đình", "0-0")]
        new = [(e.change, e.status) for e in await alerts.after("d:Hoàn Kiếm", "0-0")]
        assert old == [("flagged", "open"), ("withdrawn", "withdrawn")]
        assert new == [("flagged", "open")]
        assert await alerts.in_status("d:Ba Đình", "open", 10) == []
        assert len(await alerts.in_status("d:Hoàn Kiếm", "open", 10)) == 1

    run(base_settings, test)


def test_officials_steps_are_compare_and_set(base_settings: Settings) -> None:
    async def test(alerts: AlertStore, _: WebhookStore) -> None:
        await alerts.apply(drafts(flag("C")))
        read = await alerts.get(f"{'C':0>24}")
        assert read is not None
        await alerts.step(read, "acknowledged", "acknowledged", {"by": "an"})
        with pytest.raises(StepRaced):  # the same stale read again
            await alerts.step(read, "acknowledged", "acknowledged", {"by": "binh"})
        now = await alerts.get(f"{'C':0>24}", history=True)
        assert now is not None and now.status == "acknowledged"
        assert [h["change"] for h in now.history] == ["flagged", "acknowledged"]
        assert now.history[1]["by"] == "an"
        events = await alerts.after("d:Ba Đình", "0-0")
        assert events[-1].change == "acknowledged" and events[-1].detail is not None

    run(base_settings, test)


def test_venue_alerts_follow_what_they_say(base_settings: Settings) -> None:
    async def test(alerts: AlertStore, _: WebhookStore) -> None:
        places = {"shop": {"owner": "Hoa", "name": "Hoa"}}
        f0 = [Visit("s1", "A", "shop", AT - timedelta(hours=3), AT - timedelta(hours=2), "")]
        window = (AT - timedelta(days=2), AT)
        (d,) = venue_alerts("r1", "A", f0, [], places, window, AT)
        assert len(await alerts.apply([d], report_id="r1")) == 1
        assert await alerts.apply([d], report_id="r1") == []  # a replayed status
        assert await alerts.venue_alerts_of("r1") == {d.alert_id: "o:Hoa"}
        gone = withdrawal(d.alert_id, "venue", "o:Hoa", AT)
        assert len(await alerts.apply([gone], report_id="r1")) == 1
        (again,) = venue_alerts("r1", "A", f0, [], places, window, AT)
        assert len(await alerts.apply([again], report_id="r1")) == 1  # the same content, back
        changes = [e.change for e in await alerts.after("o:Hoa", "0-0")]
        assert changes == ["flagged", "withdrawn", "flagged"]

    run(base_settings, test)


def test_the_webhook_cursor_moves_only_under_the_lease(base_settings: Settings) -> None:
    async def test(_: AlertStore, hooks: WebhookStore) -> None:
        hook = await hooks.add("d:Ba Đình", "http://127.0.0.1:1/", "", "an", "official", "0-0")
        assert await hooks.lease(hook.webhook_id, "mine")
        assert not await hooks.lease(hook.webhook_id, "theirs")
        assert not await hooks.advance(hook.webhook_id, "theirs", "5-0")
        assert await hooks.advance(hook.webhook_id, "mine", "5-0")
        await hooks.release(hook.webhook_id, "mine")
        assert await hooks.lease(hook.webhook_id, "theirs")
        found = await hooks.get(hook.webhook_id)
        assert found is not None and found.cursor == "5-0" and found.delivered == 1
        await hooks.delete(hook)
        assert await hooks.get(hook.webhook_id) is None
        await hooks.failed(hook.webhook_id, 2, "HTTP 500")  # after deletion: no ghost
        assert await hooks.get(hook.webhook_id) is None

    run(base_settings, test)
