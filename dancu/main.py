"""``dancu``: run the platform, manage services, rebuild state, check IDs and QR codes."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra import services as svc
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
out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _via_api(settings: Settings, method: str, path: str, timeout: float) -> bool:
    """Ask the running process (the owner of the embedded store); False when none answers."""
    try:
        r = httpx.request(method, f"{settings.api_url}{path}", timeout=timeout)
    except httpx.ConnectError:
        return False
    r.raise_for_status()
    out.print_json(r.text)
    return True


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
    role: Annotated[str, typer.Option(help="all | worker | api (scaled deployments).")] = "all",
    services: Annotated[bool, typer.Option(help="Start the embedded services first.")] = True,
) -> None:
    """Run the platform: Faust worker + API + ClickHouse sink (+ traffic simulator)."""
    from dancu.runtime import RunOptions, serve
    from infra.kafka_io import create_topics

    if role not in ("all", "worker", "api"):
        err.print(f"[red]error:[/red] --role must be all, worker or api, got {role!r}")
        raise typer.Exit(2)
    settings = _settings()
    if services:
        _start_services(settings)
    asyncio.run(create_topics(settings))
    err.print(
        f"[bold green]dancu is up[/bold green]: dashboard and API at "
        f"[link]{settings.api_url}/[/link] (health: {settings.api_url}/healthz)"
    )
    summary = serve(
        settings,
        RunOptions(role=role, simulate=simulate and role == "all", rate=rate, duration=duration),
    )
    if duration:
        result = {
            "scans_produced": summary.produced,
            "scans_processed": summary.processed,
            "consumer_lag_at_exit": summary.lag,
            "seconds": round(summary.seconds, 1),
        }
        out.print_json(json.dumps(result))
        if summary.lag != 0 or (simulate and summary.processed < summary.produced):
            err.print("[yellow]warning: not every produced scan was processed before exit[/yellow]")
            raise typer.Exit(1)


@app.command()
def rebuild() -> None:
    """Restore Redis's visit indexes from ClickHouse (through the running API if up)."""
    settings = _settings()
    if _via_api(settings, "POST", "/v1/admin/rebuild", timeout=600):
        return
    from infra.clickhouse import ClickHouse
    from infra.rebuild import rebuild_visit_index
    from infra.redis_store import VisitIndex, make_redis

    async def run() -> int:
        ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
        await asyncio.to_thread(ch.migrate)
        redis = make_redis(settings.redis_url)
        window = timedelta(days=settings.visit_window_days)
        try:
            index = VisitIndex(redis, settings.redis_prefix, window)
            with err.status("rebuilding visit indexes …") as status:
                return await rebuild_visit_index(
                    ch, index, window, lambda n: status.update(f"restored {n:,} visits")
                )
        finally:
            await redis.aclose()
            ch.close()

    out.print_json(json.dumps({"visits_restored": asyncio.run(run())}))


@app.command()
def stats() -> None:
    """Print live stats (from the running API, or the stores directly when it is down)."""
    settings = _settings()
    if _via_api(settings, "GET", "/v1/stats/live", timeout=30):
        return
    from infra.clickhouse import ClickHouse

    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
    ch.migrate()
    distinct, rows = ch.visit_totals()
    out.print_json(
        json.dumps(
            {
                "visits_total": distinct,
                "visit_rows": rows,
                "visits_by_district": ch.visits_by_district(),
            }
        )
    )


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


@app.command()
def seed(
    residents: Annotated[int, typer.Option(min=1, help="How many residents.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same city).")] = 1,
) -> None:
    """Generate a synthetic Hà Nội and load it into Redis and ClickHouse."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from infra.clickhouse import ClickHouse
    from infra.redis_store import CheckpointDirectory, make_redis
    from infra.residents import ResidentStore
    from infra.seed import seed_city
    from registry.cards import load_rulebook
    from registry.pseudonym import Pseudonymizer
    from registry.synthetic import SeedPlan

    settings = _settings()
    _require_store_owner(settings)

    async def run() -> dict[str, object]:
        ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
        await asyncio.to_thread(ch.migrate)
        redis = make_redis(settings.redis_url)
        t0 = time.perf_counter()
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar:
                task = bar.add_task("residents", total=residents)
                report = await seed_city(
                    SeedPlan(residents=residents, seed=seed),
                    store=ResidentStore(redis, settings.redis_prefix),
                    places=CheckpointDirectory(redis, settings.redis_prefix),
                    clickhouse=ch,
                    pseudonymize=Pseudonymizer(
                        settings.pseudonym_secret.get_secret_value().encode()
                    ),
                    rules=load_rulebook(),
                    progress=lambda n: bar.advance(task, n),
                )
        finally:
            await redis.aclose()
            ch.close()
        return {
            "residents": report.residents,
            "households": report.households,
            "checkpoints": report.checkpoints,
            "colours": report.colours,
            "seconds": round(time.perf_counter() - t0, 1),
        }

    out.print_json(json.dumps(asyncio.run(run()), ensure_ascii=False))


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

    from rich.progress import BarColumn, Progress, TextColumn

    from infra.imports import Importer, ImportFailed, ImportLedger
    from infra.kafka_io import create_topics, make_producer
    from infra.redis_store import make_redis
    from infra.residents import ResidentStore
    from infra.tables import TableError, read_table
    from registry.imports import KINDS

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
        redis = make_redis(settings.redis_url)
        store = ResidentStore(redis, settings.redis_prefix)
        ledger = ImportLedger(redis, settings.redis_prefix, settings.data_dir.resolve())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,} rows"),
            console=err,
        ) as bar:
            task = bar.add_task(f"importing {kind}", total=None)
            try:
                if kind == "residents":
                    return await _load_residents(
                        settings,
                        header,
                        rows,
                        store,
                        ledger,
                        str(file),
                        lambda n: bar.advance(task, n),
                    )
                await create_topics(settings)
                producer = make_producer(settings)
                await producer.start()
                try:
                    report = await Importer(settings, store, ledger, producer).run(
                        kind,
                        header,
                        rows,
                        source=str(file),
                        progress=lambda n: bar.advance(task, n),
                    )
                finally:
                    await producer.stop()
                return report.as_dict()
            finally:
                store.close_sync()
                await redis.aclose()

    try:
        report = asyncio.run(run())
    except ImportFailed as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if outcomes is not None:
        src = settings.data_dir.resolve() / "imports" / str(report["import_id"])
        shutil.copyfile(src / "records.jsonl", outcomes)
    out.print_json(json.dumps(report, ensure_ascii=False, default=str))


async def _load_residents(
    settings: Settings,
    header: list[str],
    rows: Any,
    store: Any,
    ledger: Any,
    source: str,
    progress: Any,
) -> dict[str, object]:
    from infra.clickhouse import ClickHouse
    from infra.residents_import import load_residents
    from registry.cards import load_rulebook
    from registry.pseudonym import Pseudonymizer

    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
    await asyncio.to_thread(ch.migrate)
    try:
        report = await load_residents(
            header,
            rows,
            source=source,
            store=store,
            ledger=ledger,
            clickhouse=ch,
            pseudonymize=Pseudonymizer(settings.pseudonym_secret.get_secret_value().encode()),
            rules=load_rulebook(),
            progress=progress,
        )
    finally:
        ch.close()
    return report.as_dict()


def _ledger_call(fn: Any) -> Any:
    """Run ``fn(ledger, producer)`` against Redis and Kafka, closing both."""
    from infra.imports import ImportLedger
    from infra.kafka_io import make_producer
    from infra.redis_store import make_redis

    settings = _settings()

    async def run() -> Any:
        redis = make_redis(settings.redis_url)
        producer = make_producer(settings)
        await producer.start()
        try:
            return await fn(
                ImportLedger(redis, settings.redis_prefix, settings.data_dir.resolve()),
                producer,
                settings,
            )
        finally:
            await producer.stop()
            await redis.aclose()

    return asyncio.run(run())


@review_app.command("list")
def review_list(limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """Mismatched records waiting for a decision (JSON lines)."""

    async def fn(ledger: Any, _p: Any, _s: Any) -> list[Any]:
        return list(await ledger.review_items(limit))

    for item in _ledger_call(fn):
        print(json.dumps(item, ensure_ascii=False))


def _decide(review_id: str, accept: bool) -> None:
    from infra.imports import send_records

    async def fn(ledger: Any, producer: Any, settings: Settings) -> bool:
        item = await ledger.take_review(review_id)
        if item is None:
            return False
        if accept:
            await send_records(producer, settings, [item["event"]])
            await ledger.mark_imported([review_id])
        return True

    if not _ledger_call(fn):
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
    from infra.clickhouse import ClickHouse
    from infra.imports import ImportLedger
    from infra.quality import quality_report
    from infra.redis_store import make_redis

    async def run() -> dict[str, Any]:
        ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
        await asyncio.to_thread(ch.migrate)
        redis = make_redis(settings.redis_url)
        try:
            return await quality_report(
                ch, ImportLedger(redis, settings.redis_prefix, settings.data_dir.resolve())
            )
        finally:
            await redis.aclose()
            ch.close()

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
