"""``dancu``: run the platform, manage services, rebuild state, check IDs and QR codes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from gate.cli import gate_main
from infra import services as svc
from infra.secrets import METRICS_TOKEN_FILE
from infra.settings import Settings, load_settings

app = typer.Typer(
    help="dancu: real-time epidemic risk tracing on a population registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Start, stop and inspect the embedded Kafka and Redis.", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
id_app = typer.Typer(help="Personal ID numbers (số định danh cá nhân).", no_args_is_help=True)
qr_app = typer.Typer(help="CCCD chip-card QR payloads.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")
review_app = typer.Typer(
    help="The review queue of mismatched import records.", no_args_is_help=True
)
app.add_typer(id_app, name="id")
app.add_typer(review_app, name="review")
app.add_typer(qr_app, name="qr")
users_app = typer.Typer(
    help="People's API tokens (hashed at rest, expiring).", no_args_is_help=True
)
devices_app = typer.Typer(help="Checkpoint devices' signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(devices_app, name="devices")
# `dancu gate …`: the checkpoint's camera side. The gate program itself (`dancu gate
# --checkpoint ID (--camera N | --video FILE | --images DIR)`, gate/cli.py) is this group's
# callback, run when no subcommand (`decode`) is named; it refuses its options given with
# one. `no_args_is_help` keeps a bare `dancu gate` printing the help.
gate_app = typer.Typer(help="The checkpoint gate: QR codes from cameras.", no_args_is_help=True)
app.add_typer(gate_app, name="gate")
gate_app.callback(invoke_without_command=True)(gate_main)  # the gate program (gate/cli.py)


def _credentials(action: Callable[[Any], Awaitable[dict[str, object]]]) -> None:
    """Run one credential action against Redis and print its JSON (errors: exit 2)."""
    from infra.credentials import Credentials
    from infra.redis_store import make_redis

    settings = _settings()

    async def run() -> dict[str, object]:
        redis = make_redis(settings.redis_url)
        try:
            return await action(Credentials(redis, settings.redis_prefix))
        finally:
            await redis.aclose()

    try:
        result = asyncio.run(run())
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print_json(json.dumps(result, ensure_ascii=False))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Who (a login name).")],
    role: Annotated[str, typer.Option(help="official | epidemiologist | steward | owner | admin")],
    district: Annotated[str, typer.Option(help="An official's district.")] = "",
    days: Annotated[int, typer.Option(help="The token's lifetime in days (1–366).")] = 90,
    org: Annotated[str, typer.Option(help="An owner's business or organisation.")] = "",
) -> None:
    """Create an API token for a person; it is printed once and stored only as a hash."""

    async def action(c: Any) -> dict[str, object]:
        token, expires = await c.add_user(name, role, district, days, organisation=org)
        return {
            "name": name,
            "role": role,
            "district": district,
            "organisation": org,
            "token": token,
            "expires_at": expires.isoformat(),
        }

    _credentials(action)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="Whose tokens.")]) -> None:
    """Revoke every token of a person."""

    async def action(c: Any) -> dict[str, object]:
        return {"name": name, "tokens_revoked": await c.revoke_user(name)}

    _credentials(action)


@devices_app.command("add")
def devices_add(
    checkpoint_id: Annotated[str, typer.Argument(help="The device's checkpoint.")],
    more: Annotated[
        list[str] | None, typer.Argument(help="More checkpoints (a site's gateway device).")
    ] = None,
) -> None:
    """Create a device for a checkpoint; its signing key is printed once."""

    async def action(c: Any) -> dict[str, object]:
        device_id, key = await c.add_device(checkpoint_id, *(more or []))
        return {
            "device_id": device_id,
            "checkpoint_id": checkpoint_id,
            "checkpoints": [checkpoint_id, *(more or [])],
            "key": key,
        }

    _credentials(action)


@devices_app.command("revoke")
def devices_revoke(device_id: Annotated[str, typer.Argument(help="The device.")]) -> None:
    """Take a device out of service."""

    async def action(c: Any) -> dict[str, object]:
        if not await c.revoke_device(device_id):
            raise ValueError(f"no device {device_id!r}")
        return {"device_id": device_id, "revoked": True}

    _credentials(action)


out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _via_api(settings: Settings, method: str, path: str, timeout: float) -> bool:
    """Ask the running process (the owner of the embedded store); False when none answers.
    The CLI signs in with an admin token of its own, living only for this call (whoever
    runs the CLI holds the credential store already)."""
    from infra.credentials import Credentials
    from infra.redis_store import make_redis

    try:
        httpx.get(f"{settings.api_url}/healthz", timeout=5)
    except httpx.HTTPError:
        return False
    name = f"cli-{os.getpid()}-{secrets.token_hex(3)}"

    async def issue() -> str:
        redis = make_redis(settings.redis_url)
        try:
            token, _ = await Credentials(redis, settings.redis_prefix).add_user(
                name, "admin", seconds=int(timeout) + 60
            )
            return token
        finally:
            await redis.aclose()

    async def revoke() -> None:
        redis = make_redis(settings.redis_url)
        try:
            await Credentials(redis, settings.redis_prefix).revoke_user(name)
        finally:
            await redis.aclose()

    token = asyncio.run(issue())
    try:
        r = httpx.request(
            method,
            f"{settings.api_url}{path}",
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "X-Purpose": f"dancu CLI {path}"},
        )
    except httpx.ConnectError:
        return False
    finally:
        asyncio.run(revoke())
    r.raise_for_status()
    out.print_json(r.text)
    return True


def _metrics_credential(settings: Settings) -> str:
    """Where Prometheus's token is, never the token itself (the banner may be logged)."""
    if settings.metrics_token is not None:
        return "the token in DANCU_METRICS_TOKEN"
    return f"the token in {settings.data_dir.resolve() / METRICS_TOKEN_FILE}"


def _demo_tokens(settings: Settings) -> None:
    """Tokens to sign in to the dashboard of the simulated city (valid a day), one per
    role, printed and kept in ``<data dir>/demo-tokens.json`` (readable by its owner
    only). Real deployments create people's tokens with ``dancu users add``."""
    from infra.credentials import Credentials
    from infra.redis_store import make_redis

    who = {
        "admin": ("admin", ""),
        "epidemiologist": ("epidemiologist", ""),
        "steward": ("steward", ""),
        "official (Ba Đình)": ("official", "Ba Đình"),
    }

    async def issue() -> dict[str, str]:
        redis = make_redis(settings.redis_url)
        creds = Credentials(redis, settings.redis_prefix)
        tag = secrets.token_hex(3)
        try:
            tokens = {}
            for label, (role, district) in who.items():
                token, _ = await creds.add_user(f"demo-{role}-{tag}", role, district, days=1)
                tokens[label] = token
            return tokens
        finally:
            await redis.aclose()

    try:
        tokens = asyncio.run(issue())
    except Exception as exc:  # the platform runs without them; say why
        err.print(f"[yellow]no demo tokens ({exc})[/yellow]")
        return
    path = settings.data_dir / "demo-tokens.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(tokens, ensure_ascii=False, indent=2))
    err.print(f"sign in to the dashboard with one of these tokens (valid 24 h; also in {path}):")
    for label, token in tokens.items():
        err.print(f"  {label:<20} {token}")


def _print_status(rows: list[svc.ServiceStatus]) -> None:
    table = Table("service", "state", "endpoint", "pid")
    for r in rows:
        table.add_row(r.name, r.state, r.endpoint, str(r.pid or ""))
    out.print(table)


def _start_services(settings: Settings) -> None:
    try:
        with err.status("starting Kafka and Redis …"):
            rows = svc.start_all(settings)
    except svc.ServiceError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_status(rows)


@services_app.command("start")
def services_start() -> None:
    """Obtain (Maven jars, apt package) and start Kafka and Redis; idempotent."""
    _start_services(_settings())


@services_app.command("stop")
def services_stop() -> None:
    """Stop the embedded services started by `dancu services start`."""
    _print_status(svc.stop_all(_settings()))


@services_app.command("status")
def services_status() -> None:
    """Show each service's state and endpoint."""
    _print_status(svc.status_all(_settings()))


@topics_app.command("create")
def topics_create() -> None:
    """Create the topics (scans, f0-reports, exposures, dead-letters) if missing."""
    from infra.kafka_io import create_topics

    names = asyncio.run(create_topics(_settings()))
    out.print("topics: " + ", ".join(names))


@app.command()
def up(
    duration: Annotated[
        float | None, typer.Option(help="Run this many seconds, then stop and print a summary.")
    ] = None,
    simulate: Annotated[bool, typer.Option(help="Run the built-in city traffic simulator.")] = True,
    rate: Annotated[float, typer.Option(help="Simulated scans per second.")] = 200.0,
    role: Annotated[
        str,
        typer.Option(
            help="all (store + workers + API processes) | store (the ClickHouse sink and "
            "analytics) | worker (validation, Redis state, tracing) | api (scaled deployments)."
        ),
    ] = "all",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes `--role all` starts; they share the topics' partitions "
            "(more workers than partitions leaves some idle).",
        ),
    ] = 1,
    services: Annotated[bool, typer.Option(help="Start the embedded services first.")] = True,
    city: Annotated[
        int,
        typer.Option(
            min=0,
            help="Residents of the synthetic city the simulator walks; seeded (seed 1) when "
            "the registry is empty. 0: no seeding.",
        ),
    ] = 50_000,
) -> None:
    """Run the platform: API + Faust workers + ClickHouse sink (+ traffic simulator)."""
    from dancu.runtime import RunOptions, serve
    from infra.kafka_io import create_topics

    if role not in ("all", "store", "worker", "api"):
        err.print(f"[red]error:[/red] --role must be all, store, worker or api, got {role!r}")
        raise typer.Exit(2)
    settings = _settings()
    if services:
        _start_services(settings)
    asyncio.run(create_topics(settings))
    if role == "all" and simulate and city and settings.embedded_clickhouse:
        seeded = _seed_city(settings, city, 1, only_if_empty=True)
        if seeded is not None:
            err.print(
                f"seeded a synthetic city of {seeded['residents']:,} residents and "
                f"{seeded['checkpoints']:,} checkpoints (the registry was empty)"
            )
    if role in ("all", "api"):
        err.print(
            f"[bold green]dancu is up[/bold green]: dashboard and API at "
            f"[link]{settings.api_url}/[/link] (health: {settings.api_url}/healthz; "
            f"metrics: {settings.api_url}/metrics with {_metrics_credential(settings)})"
        )
        if role == "all" and simulate:
            _demo_tokens(settings)
    summary = serve(
        settings,
        RunOptions(
            role=role,
            workers=workers,
            simulate=simulate and role == "all",
            rate=rate,
            duration=duration,
            city=city or 50_000,
        ),
    )
    if duration:
        result = {
            "scans_produced": summary.produced,
            "scans_processed": summary.processed,
            "consumer_lag_at_exit": summary.lag,
            "seconds": round(summary.seconds, 1),
            **summary.extra,
        }
        out.print_json(json.dumps(result))
        if simulate and summary.produced == 0:
            err.print("[red]error: the simulator produced no scan (see the messages above)[/red]")
            raise typer.Exit(1)
        if summary.lag != 0 or (simulate and summary.processed < summary.produced):
            err.print("[yellow]warning: not every produced scan was processed before exit[/yellow]")
            raise typer.Exit(1)


@app.command()
def rebuild() -> None:
    """Restore Redis's derived state from ClickHouse: checkpoints, residents' statuses,
    visit indexes (through the running API if up). Re-import the registry export first."""
    settings = _settings()
    if _via_api(settings, "POST", "/v1/admin/rebuild", timeout=600):
        return
    from dataclasses import asdict

    from dancu.stores import open_stores
    from infra.rebuild import rebuild_all
    from registry.cards import load_rulebook

    async def backlog() -> int:
        from infra.kafka_io import KafkaLag

        lag = KafkaLag(settings)
        await lag.start()
        try:
            return await lag.sink_backlog()
        finally:
            await lag.stop()

    waiting = asyncio.run(backlog())
    if waiting:
        err.print(
            f"[red]error:[/red] the ClickHouse sink has {waiting} record(s) still to write; "
            "start the platform (dancu up) so it writes them, then rebuild"
        )
        raise typer.Exit(1)

    async def run() -> dict[str, int]:
        async with open_stores(settings, clickhouse=True) as st:
            assert st.clickhouse is not None
            with err.status("rebuilding Redis from ClickHouse …") as status:
                done = await rebuild_all(
                    st.clickhouse,
                    st.index,
                    st.residents,
                    st.places,
                    st.ledger,
                    st.pseudonymize,
                    load_rulebook(),
                    timedelta(days=settings.visit_window_days),
                    lambda what, n: status.update(f"restored {n:,} {what}"),
                )
        return asdict(done)

    out.print_json(json.dumps(asyncio.run(run())))


@app.command()
def stats() -> None:
    """Print live stats (from the running API, or the stores directly when it is down)."""
    settings = _settings()
    if _via_api(settings, "GET", "/v1/stats/live", timeout=30):
        return
    from dancu.stores import open_stores

    async def run() -> dict[str, object]:
        async with open_stores(settings, clickhouse=True) as st:
            ch = st.clickhouse
            assert ch is not None
            distinct, rows = await asyncio.to_thread(ch.visit_totals)
            by_district = await asyncio.to_thread(ch.visits_by_district)
        return {"visits_total": distinct, "visit_rows": rows, "visits_by_district": by_district}

    out.print_json(json.dumps(asyncio.run(run()), ensure_ascii=False))


def _require_store_owner(settings: Settings) -> None:
    """Bulk loads open the embedded ClickHouse themselves: nobody else may hold it."""
    if not settings.embedded_clickhouse:
        return
    try:
        httpx.get(f"{settings.api_url}/healthz", timeout=2)
    except httpx.HTTPError:
        return
    err.print(
        "[red]error:[/red] `dancu up` is running and owns the embedded ClickHouse; "
        "stop it first (or use a ClickHouse server via CLICKHOUSE_URL)"
    )
    raise typer.Exit(1)


def _progress_bar(rows: bool = False) -> Progress:
    """A progress bar on stderr: a count of rows (unknown total) or M of N with time left."""
    if rows:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,} rows"),
            console=err,
        )
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def _seed_city(
    settings: Settings, residents: int, seed: int, *, only_if_empty: bool = False
) -> dict[str, object] | None:
    """Seed the synthetic city (with a progress bar); with ``only_if_empty``, only when
    the registry holds nobody yet. Returns the seed report, or None when skipped."""
    import time

    from dancu.stores import open_stores
    from registry.cards import load_rulebook
    from registry.seeding import seed_city
    from registry.synthetic import SeedPlan

    async def run() -> dict[str, object] | None:
        t0 = time.perf_counter()
        async with open_stores(settings, clickhouse=True) as st:
            assert st.analytics is not None
            if only_if_empty:
                async for _ in st.residents.chunks_of_ids(1000):
                    return None
            with _progress_bar() as bar:
                task = bar.add_task("residents", total=residents)
                report = await seed_city(
                    SeedPlan(residents=residents, seed=seed),
                    registry=st.residents,
                    places=st.places,
                    analytics=st.analytics,
                    pseudonymize=st.pseudonymize,
                    rules=load_rulebook(),
                    progress=lambda n: bar.advance(task, n),
                )
        return {
            "residents": report.residents,
            "households": report.households,
            "checkpoints": report.checkpoints,
            "colours": report.colours,
            "seconds": round(time.perf_counter() - t0, 1),
        }

    return asyncio.run(run())


@app.command()
def seed(
    residents: Annotated[int, typer.Option(min=1, help="How many residents.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same city).")] = 1,
) -> None:
    """Generate a synthetic Hà Nội and load it into Redis and ClickHouse."""
    settings = _settings()
    _require_store_owner(settings)
    out.print_json(json.dumps(_seed_city(settings, residents, seed), ensure_ascii=False))


@app.command("import")
def import_(
    kind: Annotated[
        str,
        typer.Argument(
            help="residents | vaccinations | f0-positives | "
            "recoveries | health-declarations | "
            "travel-declarations"
        ),
    ],
    file: Annotated[Path, typer.Argument(help="CSV (header row) or JSON Lines file.")],
    outcomes: Annotated[
        Path | None, typer.Option(help="Write one JSON line per input row here.")
    ] = None,
) -> None:
    """Import a file: validate and match every row; prints and stores the report."""
    import shutil

    from dancu.stores import open_stores
    from infra.tables import TableError, read_table
    from registry.cards import load_rulebook
    from registry.importer import Importer
    from registry.imports import KINDS
    from registry.reports import ImportFailed
    from registry.residents_import import load_residents

    settings = _settings()
    if kind != "residents" and kind not in KINDS:
        err.print(
            f"[red]error:[/red] unknown kind {kind!r}; one of: residents, " + ", ".join(KINDS)
        )
        raise typer.Exit(2)
    try:
        header, rows = read_table(file)
    except TableError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if kind == "residents":
        _require_store_owner(settings)

    async def run() -> dict[str, object]:
        residents = kind == "residents"
        async with open_stores(settings, clickhouse=residents, kafka=not residents) as st:
            with _progress_bar(rows=True) as bar:
                task = bar.add_task(f"importing {kind}", total=None)
                if residents:
                    assert st.analytics is not None
                    report = await load_residents(
                        header,
                        rows,
                        source=str(file),
                        registry=st.residents,
                        ledger=st.ledger,
                        analytics=st.analytics,
                        pseudonymize=st.pseudonymize,
                        rules=load_rulebook(),
                        progress=lambda n: bar.advance(task, n),
                    )
                else:
                    assert st.health_records is not None
                    report = await Importer(st.residents, st.ledger, st.health_records).run(
                        kind,
                        header,
                        rows,
                        source=str(file),
                        progress=lambda n: bar.advance(task, n),
                    )
        return report.as_dict()

    try:
        report = asyncio.run(run())
    except ImportFailed as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if outcomes is not None:
        src = settings.data_dir.resolve() / "imports" / str(report["import_id"])
        shutil.copyfile(src / "records.jsonl", outcomes)
    out.print_json(json.dumps(report, ensure_ascii=False, default=str))


def _review_call(fn: Any) -> Any:
    """Run ``fn(stores)`` with Redis and Kafka open (the review queue and its records)."""
    from dancu.stores import open_stores

    settings = _settings()

    async def run() -> Any:
        async with open_stores(settings, kafka=True) as st:
            return await fn(st)

    return asyncio.run(run())


@review_app.command("list")
def review_list(limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """Mismatched records waiting for a decision (JSON lines)."""

    async def fn(st: Any) -> list[Any]:
        return list(await st.ledger.review_items(limit))

    for item in _review_call(fn):
        print(json.dumps(item, ensure_ascii=False))


def _decide(review_id: str, accept: bool) -> None:
    from registry.importer import decide_review

    async def fn(st: Any) -> bool:
        item = await decide_review(st.ledger, st.health_records, st.residents, review_id, accept)
        return item is not None

    if not _review_call(fn):
        err.print(f"[red]error:[/red] no review item {review_id!r}")
        raise typer.Exit(1)
    print(json.dumps({"review_id": review_id, "decision": "accept" if accept else "reject"}))


@review_app.command("accept")
def review_accept(review_id: str) -> None:
    """Accept a mismatched record: it is applied to the resident like a match."""
    _decide(review_id, True)


@review_app.command("reject")
def review_reject(review_id: str) -> None:
    """Reject a mismatched record: it is dropped from the queue, never applied."""
    _decide(review_id, False)


@app.command()
def quality() -> None:
    """Data quality: completeness per district, match rates, freshness per source."""
    settings = _settings()
    if _via_api(settings, "GET", "/v1/quality", timeout=120):
        return
    from dancu.stores import open_stores
    from registry.quality import quality_report

    async def run() -> dict[str, Any]:
        async with open_stores(settings, clickhouse=True) as st:
            assert st.analytics is not None
            return await quality_report(st.analytics, st.ledger)

    out.print_json(json.dumps(asyncio.run(run()), ensure_ascii=False))


@id_app.command("check")
def id_check(
    number: str,
    dob: Annotated[str | None, typer.Option(help="Birth date YYYY-MM-DD.")] = None,
    gender: Annotated[str | None, typer.Option(help="Nam or Nữ.")] = None,
) -> None:
    """Validate a 12-digit ID (and its consistency with --dob/--gender); JSON out."""
    from datetime import date

    from registry.ids import check_id

    birth = None
    if dob is not None:
        try:
            birth = date.fromisoformat(dob)
        except ValueError as exc:
            err.print(f"[red]error:[/red] --dob must be YYYY-MM-DD, got {dob!r}")
            raise typer.Exit(2) from exc
    result = check_id(number.strip(), dob=birth, gender=gender)
    print(json.dumps(result.as_dict(), ensure_ascii=False))
    if not result.valid:
        raise typer.Exit(1)


@qr_app.command("parse")
def qr_parse(text: str) -> None:
    """Parse a CCCD QR text into JSON; exits non-zero naming every problem."""
    from registry.cccd import parse_cccd
    from registry.errors import InvalidQrPayload

    try:
        card = parse_cccd(text)
    except InvalidQrPayload as exc:
        print(json.dumps({"valid": False, "errors": exc.errors}, ensure_ascii=False))
        raise typer.Exit(1) from exc
    print(json.dumps(card.as_dict(), ensure_ascii=False))


@gate_app.command("decode")
def gate_decode(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, …).")],
) -> None:
    """Print the QR codes of each image, or why none was read, one JSON line per image.

    For field diagnosis: a card shows as its ID only, never its name or address. Exits 0
    when every image holds a recognised code (a card or a dancu code), 1 when some image
    holds none, 2 when some image cannot be read.
    """
    from gate.qr import UnreadableImage, decode_image_file

    worst = 0
    for path in images:
        line: dict[str, object] = {"image": str(path), "codes": []}
        try:
            codes = decode_image_file(path)
        except UnreadableImage as exc:
            line["error"] = str(exc)
            worst = 2
        else:
            line["codes"] = [c.summary() for c in codes]
            if not codes:
                line["error"] = "no QR code found"
            if all(c.kind == "unrecognised" for c in codes):
                worst = max(worst, 1)
        print(json.dumps(line, ensure_ascii=False), flush=True)
    raise typer.Exit(worst)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
