"""`python -m bench` commands of the benchmarks that drive the whole stack over HTTP: e2e,
ceiling (what e2e is compared with), scale and peers. bench/cli.py adds them to its group;
like every command they build frozen settings from their flags and import their module
inside, so one benchmark's missing extra cannot break another's command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final

import click

from bench.cli_common import data_dir_option, echo_report, out_option, progress

__all__ = ["ceiling", "e2e", "peers", "scale"]


_LOG_FLAGS: Final = {
    "SQLite log (FULL)": "sqlite",
    "PostgreSQL log + ledgers": "postgres",
    "PostgreSQL log, SQLite ledgers": "postgres-log",
    "in-memory log": "memory",
}


@click.command()
@click.option("--quick", is_flag=True, help="Concurrency 4, one second, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions per cell (default 3).")
@click.option(
    "-c",
    "--concurrency",
    "concurrencies",
    type=click.IntRange(1),
    multiple=True,
    help="Concurrent HTTP clients; repeat for several (default 16 64 256).",
)
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds measured (default 10).")
@click.option("--warmup", type=click.FloatRange(0), help="Seconds before measuring (default 2).")
@click.option("--no-redis", is_flag=True, help="No Redis idempotency cache (the log alone).")
@click.option(
    "--client",
    "clients",
    type=click.Choice(["wrk", "loadgen"]),
    multiple=True,
    help="Load generator; repeat for both (default both: wrk, found on PATH or installed "
    "with apt-get as root, and bench/loadgen.py).",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["sqlite", "postgres", "postgres-log", "memory"]),
    multiple=True,
    help="Saga logs to measure; repeat for several (default sqlite and memory); postgres "
    "puts the services' ledgers in the same fresh database too (a schema each), "
    "postgres-log only the saga log.",
)
@click.option(
    "--pg-url",
    default=None,
    help="PostgreSQL server (and role) on which --backend postgres creates, and then "
    "drops, a fresh database per measurement [default: postgresql://127.0.0.1:5432/postgres].",
)
@click.option("--no-install", is_flag=True, help="Never apt-get install a missing wrk.")
@click.option("--no-daemon", is_flag=True, help="No `saga recovery` beside the gateway.")
@click.option("--no-ceiling", is_flag=True, help="Do not measure the ceiling alongside.")
@click.option(
    "--no-open-loop",
    is_flag=True,
    help="No open-loop run at 80% of each durable log's closed-loop rate.",
)
@click.option(
    "--open-share",
    "open_shares",
    type=click.FloatRange(0, 1, min_open=True),
    multiple=True,
    help="Share of the closed-loop rate the open loop offers; repeat for several, e.g. "
    "0.2 0.4 0.6 0.8 for the 201's latency against load (default 0.8).",
)
@click.option(
    "--ceiling-concurrency",
    type=click.IntRange(1),
    help="Sagas in flight in the ceiling (default 256, the gateway's runner capacity).",
)
@click.option("--no-chart", is_flag=True, help="Write no PNG chart.")
@out_option("e2e")
@data_dir_option
@click.pass_context
def e2e(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrencies: tuple[int, ...],
    duration: float | None,
    warmup: float | None,
    no_redis: bool,
    clients: tuple[str, ...],
    backends: tuple[str, ...],
    pg_url: str | None,
    no_install: bool,
    no_daemon: bool,
    no_ceiling: bool,
    no_open_loop: bool,
    open_shares: tuple[float, ...],
    ceiling_concurrency: int | None,
    no_chart: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """HTTP POST /orders to terminal saga on the real stack, driven by wrk and by
    bench/loadgen.py: durable log vs in-memory log vs the ceiling."""
    from bench.e2e import Backend, Client, E2eSettings, run

    names = {"wrk": Client.WRK, "loadgen": Client.OWN}
    logs = {
        "sqlite": Backend.DURABLE,
        "postgres": Backend.POSTGRES,
        "postgres-log": Backend.PG_LOG,
        "memory": Backend.MEMORY,
    }

    settings = E2eSettings.quick() if quick else E2eSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrencies=concurrencies or settings.concurrencies,
        duration_s=duration or settings.duration_s,
        warmup_s=settings.warmup_s if warmup is None else warmup,
        redis=not no_redis,
        clients=tuple(names[c] for c in dict.fromkeys(clients)) or settings.clients,
        backends=tuple(logs[b] for b in dict.fromkeys(backends)) or settings.backends,
        pg_url=pg_url or settings.pg_url,
        install_wrk=not no_install,
        daemon=not no_daemon,
        ceiling=not no_ceiling,
        open_loop=not no_open_loop,
        open_shares=tuple(sorted(set(open_shares))) or settings.open_shares,
        ceiling_concurrency=ceiling_concurrency or settings.ceiling_concurrency,
        chart=not no_chart,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", *(f"-c {c}" for c in settings.concurrencies)]
    flags += [f"--duration {settings.duration_s:g}", f"--warmup {settings.warmup_s:g}"]
    flags += [] if settings.redis else ["--no-redis"]
    flags += [] if settings.daemon else ["--no-daemon"]
    flags += [f"--ceiling-concurrency {settings.ceiling_concurrency}"] if settings.ceiling else []
    flags += [] if settings.ceiling else ["--no-ceiling"]
    flags += [] if settings.open_loop else ["--no-open-loop"]
    if settings.open_loop and settings.open_shares != E2eSettings().open_shares:
        flags += [f"--open-share {share:g}" for share in settings.open_shares]
    if settings.backends != E2eSettings().backends:
        flags += [f"--backend {_LOG_FLAGS[b]}" for b in settings.backends]
    if set(settings.clients) != set(Client):
        flags += [f"--client {c.name.lower().replace('own', 'loadgen')}" for c in settings.clients]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@click.command()
@click.option("--quick", is_flag=True, help="Concurrency 4, one second, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions per cell (default 3).")
@click.option(
    "-c",
    "--concurrency",
    "concurrencies",
    type=click.IntRange(1),
    multiple=True,
    help="Sagas in flight; repeat for several (default 16 64 256).",
)
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds measured (default 10).")
@click.option("--warmup", type=click.FloatRange(0), help="Seconds before measuring (default 2).")
@out_option("ceiling")
@data_dir_option
@click.pass_context
def ceiling(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrencies: tuple[int, ...],
    duration: float | None,
    warmup: float | None,
    out: Path,
    data_dir: Path | None,
) -> None:
    """An order's gRPC calls and durable writes alone: no HTTP, no engine (what e2e is
    compared with)."""
    from bench.ceiling import CeilingSettings, run

    settings = CeilingSettings.quick() if quick else CeilingSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrencies=concurrencies or settings.concurrencies,
        duration_s=duration or settings.duration_s,
        warmup_s=settings.warmup_s if warmup is None else warmup,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", *(f"-c {c}" for c in settings.concurrencies)]
    flags += [f"--duration {settings.duration_s:g}", f"--warmup {settings.warmup_s:g}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@click.command()
@click.option("--quick", is_flag=True, help="1 and 2 gateways, 4 connections, 1 s, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option(
    "-g",
    "--gateways",
    type=click.IntRange(1),
    multiple=True,
    help="Gateway processes; repeat for several (default 1 2 3).",
)
@click.option(
    "-c", "--concurrency", type=click.IntRange(1), help="Connections in all (default 64)."
)
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of load (default 10).")
@click.option(
    "--backend",
    type=click.Choice(["postgres", "sqlite"]),
    default="postgres",
    show_default=True,
    help="The saga log the gateways share.",
)
@click.option(
    "--pg-url",
    default=None,
    help="PostgreSQL server (and role) on which a fresh database is created, and then "
    "dropped, per measurement [default: postgresql://127.0.0.1:5432/postgres].",
)
@click.option("--no-install", is_flag=True, help="Never apt-get install a missing wrk.")
@out_option("scale")
@data_dir_option
@click.pass_context
def scale(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    gateways: tuple[int, ...],
    concurrency: int | None,
    duration: float | None,
    backend: str,
    pg_url: str | None,
    no_install: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """1, 2, 3 gateways and a recovery daemon on one saga log: orders/s and CPU per
    order in every process."""
    from bench.scale import ScaleBackend, ScaleSettings, run

    settings = ScaleSettings.quick() if quick else ScaleSettings()
    log = ScaleBackend.POSTGRES if backend == "postgres" else ScaleBackend.SQLITE
    settings = replace(
        settings,
        reps=reps or settings.reps,
        gateways=gateways or settings.gateways,
        concurrency=concurrency or settings.concurrency,
        duration_s=duration or settings.duration_s,
        backend=log,
        pg_url=pg_url or settings.pg_url,
        install_wrk=not no_install,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", *(f"-g {g}" for g in settings.gateways)]
    flags += [f"-c {settings.concurrency}", f"--duration {settings.duration_s:g}"]
    flags += [f"--backend {backend}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@click.command()
@click.option("--quick", is_flag=True, help="4 connections, 1 s, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Connections (default 64).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of load (default 10).")
@click.option("--no-install", is_flag=True, help="Never apt-get install a missing wrk.")
@click.option(
    "--restate-server",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The restate-server binary (default: on PATH; from the npm package "
    "@restatedev/restate-server, e.g. node_modules/.bin/restate-server).",
)
@click.option(
    "--no-kill",
    is_flag=True,
    help="Skip the kill -9 half (each orchestrator SIGKILLed mid-load and restarted).",
)
@click.option(
    "--no-redis",
    is_flag=True,
    help="This project's gateway without its Redis idempotency cache, as `saga up` runs it.",
)
@out_option("peers")
@data_dir_option
@click.pass_context
def peers(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrency: int | None,
    duration: float | None,
    no_install: bool,
    restate_server: Path | None,
    no_kill: bool,
    no_redis: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """The same order saga and services on this stack, DBOS and Restate, same load."""
    from bench.peers import PeersSettings, run

    settings = PeersSettings.quick() if quick else PeersSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrency=concurrency or settings.concurrency,
        duration_s=duration or settings.duration_s,
        install_wrk=not no_install,
        restate_given=str(restate_server) if restate_server else None,
        kill=not no_kill,
        redis=not no_redis,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"-c {settings.concurrency}"]
    flags += [f"--duration {settings.duration_s:g}"] + ([] if settings.kill else ["--no-kill"])
    flags += [] if settings.redis else ["--no-redis"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)
