from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.settings import Settings
from registry.ids import make_id


def isolated_settings(base: Settings, data_dir: Path, tag: str, **extra: object) -> Settings:
    """Settings on the same services with their own topics, keys, group and chDB path."""
    return Settings(
        data_dir=data_dir,
        topic_prefix=f"{tag}-",
        redis_prefix=f"{tag}:",
        app_id=f"dancu-{tag}",
        kafka=base.kafka,
        redis=base.redis,
        **extra,  # type: ignore[arg-type]  # validated by pydantic
    )


def make_scans(n: int, seed: int = 1, checkpoints: int = 50) -> list[dict[str, object]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    people = [
        make_id("001", rng.randint(1950, 2010), rng.choice(("Nam", "Nữ")), i) for i in range(2000)
    ]
    return [
        {
            "scan_id": f"scan-{seed}-{i}",
            "person_id": rng.choice(people),
            "checkpoint_id": f"cp-{rng.randrange(checkpoints)}",
            "ts": (now - timedelta(minutes=rng.uniform(1, 600))).isoformat(),
            "source": rng.choice(("gate", "self")),
        }
        for i in range(n)
    ]
