"""Applying an imported health record to a resident's stored fields (pure)."""

from __future__ import annotations

import json
from datetime import datetime, time
from zoneinfo import ZoneInfo

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def _later(old: str | None, new: str) -> str:
    return new if not old or old < new else old


def apply_record(
    fields: dict[str, str], kind: str, record: dict[str, object], *, replace: bool = False
) -> dict[str, str]:
    """The changed fields after one record; idempotent (re-applying changes nothing).

    ``replace``: a steward accepted this record over a conflicting one with the same key
    (another date or vaccine for the same dose), so it takes that one's place.
    """
    changes: dict[str, str] = {}
    if kind == "vaccinations":
        doses = json.loads(fields.get("doses") or "[]")
        dose = int(record["dose"])  # type: ignore[call-overload]  # validated at import
        entry = [str(record["date"]), str(record["vaccine"]), dose]
        same_dose = [d for d in doses if len(d) >= 3 and d[2] == dose]
        if not same_dose or (replace and entry not in same_dose):
            doses = [d for d in doses if d not in same_dose] + [entry]
            doses.sort(key=lambda d: d[0])
            changes["doses"] = json.dumps(doses, ensure_ascii=False)
    elif kind == "f0-positives":
        changes["f0_since"] = _later(fields.get("f0_since"), str(record["sample_time"]))
    elif kind == "test-results":
        sampled = str(record["sampled_at"])
        column, other = (
            ("f0_since", "neg_test_at")
            if record["result"] == "positive"
            else ("neg_test_at", "f0_since")
        )
        changes[column] = _later(fields.get(column), sampled)
        if replace and fields.get(other) == sampled:
            # a corrected result: the superseded one, from the same sample, no longer holds
            changes[other] = ""
    elif kind == "recoveries":
        day = datetime.fromisoformat(str(record["recovered_date"])).date()
        stamp = datetime.combine(day, time(0, 0), tzinfo=VN_TZ).isoformat()
        changes["recovered_at"] = _later(fields.get("recovered_at"), stamp)
    elif kind == "health-declarations":
        declared = str(record["declared_at"])
        changes["last_health_declaration"] = _later(fields.get("last_health_declaration"), declared)
        if record.get("symptoms") or record.get("contact_with_f0"):
            # Flagged for testing: symptomatic, or in contact with an F0.
            changes["test_needed_since"] = _later(fields.get("test_needed_since"), declared)
    elif kind == "travel-declarations":
        changes["last_travel_declaration"] = _later(
            fields.get("last_travel_declaration"), str(record["declared_at"])
        )
    return {k: v for k, v in changes.items() if fields.get(k) != v}
