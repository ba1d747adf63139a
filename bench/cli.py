"""`python -m bench`: one subcommand per benchmark.

Only this command line runs the benchmarks. They depend on the product (the engine, the
`saga` processes, saga.children, saga.probes) and never the other way round: the `saga`
command has no benchmark subcommand, and no product package imports `bench`.

Each subcommand builds its frozen settings from its flags and hands them to its module's
`run`; the benchmark modules are imported inside the commands, so one benchmark's
missing extra cannot break another's command. More benchmarks (end-to-end HTTP, recovery
of a large backlog, overload) are added here as further subcommands sharing bench/report.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

if TYPE_CHECKING:
    from bench.engine import EngineBenchSettings

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of the saga engine. Not tests: they print numbers beside baselines
    measured in the same run, and assert nothing about time."""


def _out_option(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("bench/out"),
        show_default=True,
        help=f"Folder for {name}.md, {name}.json (and {name}.png where there is a chart).",
    )


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where the temporary data folders go (default: the system temp dir); choose the "
    "disk you want to measure.",
)


def _echo_report(markdown: str, files: tuple[Path, ...]) -> None:
    click.echo(markdown)
    for path in files:
        click.echo(f"wrote {path}", err=True)


def _progress(line: str) -> None:
    click.echo(line, err=True)


@main.command()
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
    type=click.Choice(["sqlite", "postgres", "memory"]),
    multiple=True,
    help="Saga logs to measure; repeat for several (default sqlite and memory).",
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
    "--ceiling-concurrency",
    type=click.IntRange(1),
    help="Sagas in flight in the ceiling (default 256, the gateway's runner capacity).",
)
@click.option("--no-chart", is_flag=True, help="Write no PNG chart.")
@_out_option("e2e")
@_data_dir_option
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
    ceiling_concurrency: int | None,
    no_chart: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """HTTP POST /orders to terminal saga on the real stack, driven by wrk and by
    bench/loadgen.py: durable log vs in-memory log vs the ceiling."""
    from bench.e2e import Backend, Client, E2eSettings, run

    names = {"wrk": Client.WRK, "loadgen": Client.OWN}
    logs = {"sqlite": Backend.DURABLE, "postgres": Backend.POSTGRES, "memory": Backend.MEMORY}

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
    if settings.backends != E2eSettings().backends:
        flags += [f"--backend {_LOG_FLAGS[b]}" for b in settings.backends]
    if set(settings.clients) != set(Client):
        flags += [f"--client {c.name.lower().replace('own', 'loadgen')}" for c in settings.clients]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="Tiny counts, concurrency 1 and 16, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions per cell (default 3).")
@click.option(
    "-c",
    "--concurrency",
    "concurrencies",
    type=click.IntRange(1),
    multiple=True,
    help="Sagas in flight; repeat for several (default 1 16 64 256).",
)
@click.option("--sagas", type=click.IntRange(1), help="Sagas per engine measurement.")
@click.option("--dbos-sagas", type=click.IntRange(1), help="Workflows per DBOS measurement.")
@click.option("--no-dbos", is_flag=True, help="Skip the DBOS baseline.")
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["sqlite", "postgres"]),
    multiple=True,
    help="Durable logs to measure, beside the in-memory log; SQLite always is (the "
    "baseline), `--backend postgres` adds a fresh PostgreSQL database per measurement.",
)
@click.option(
    "--pg-url",
    default=None,
    help="PostgreSQL server (and role) on which --backend postgres creates, and then "
    "drops, a fresh database per measurement [default: postgresql://127.0.0.1:5432/postgres].",
)
@click.option(
    "--dbos-api",
    type=click.Choice(["threads", "async"]),
    default="threads",
    show_default=True,
    help="DBOS's sync API on N threads, or its asyncio API with N in flight.",
)
@click.option(
    "--dbos-journal",
    type=click.Choice(["wal", "default"]),
    default="wal",
    show_default=True,
    help="Put DBOS's SQLite file in WAL mode (as the engine's), or leave DBOS's default.",
)
@click.option("--no-chart", is_flag=True, help="Write no PNG chart.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/out"),
    show_default=True,
    help="Folder for engine.md, engine.json and engine.png.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where the temporary database folders go (default: the system temp dir); "
    "choose the disk you want to measure.",
)
@click.pass_context
def engine(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrencies: tuple[int, ...],
    sagas: int | None,
    dbos_sagas: int | None,
    no_dbos: bool,
    backends: tuple[str, ...],
    pg_url: str | None,
    dbos_api: str,
    dbos_journal: str,
    no_chart: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """Sagas of three no-op steps: the durable log vs the in-memory log vs DBOS."""
    from bench.dbos_baseline import DbosApi, DbosJournal
    from bench.engine import EngineBenchSettings, run

    settings = EngineBenchSettings.quick() if quick else EngineBenchSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrencies=concurrencies or settings.concurrencies,
        sagas=sagas or settings.sagas,
        dbos_sagas=dbos_sagas or settings.dbos_sagas,
        dbos=not no_dbos,
        postgres="postgres" in backends,
        pg_url=pg_url or settings.pg_url,
        dbos_api=DbosApi(dbos_api),
        dbos_journal=DbosJournal(dbos_journal),
        chart=not no_chart,
        out=out,
        data_dir=data_dir,
    )
    settings = replace(settings, command=_replay(ctx.command_path, settings))
    report = run(settings, lambda line: click.echo(line, err=True))
    click.echo(report.markdown)
    for path in report.files:
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.option("--quick", is_flag=True, help="60 sagas, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("--sagas", type=click.IntRange(1), help="Sagas in the backlog (default 10,000).")
@click.option(
    "--daemon-concurrency",
    type=click.IntRange(1),
    help="SAGA_RECOVERY_CONCURRENCY of the daemon (default 128, its own default).",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the spread.")
@click.option(
    "--backend",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="Where the saga log is: a SQLite file, or a fresh PostgreSQL database per measurement.",
)
@click.option(
    "--pg-url",
    default=None,
    help="PostgreSQL server (and role) on which --backend postgres creates, and then "
    "drops, a fresh database per measurement [default: postgresql://127.0.0.1:5432/postgres].",
)
@click.option(
    "--daemons",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="More than 1: the crashed backlog also with this many daemons at once, beside one.",
)
@_out_option("recovery")
@_data_dir_option
@click.pass_context
def recovery(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    sagas: int | None,
    daemon_concurrency: int | None,
    seed: int,
    backend: str,
    pg_url: str | None,
    daemons: int,
    out: Path,
    data_dir: Path | None,
) -> None:
    """Saga recovery daemons against sagas left unfinished at random steps, vs fresh."""
    from bench.recovery import RecoveryBenchSettings, run

    settings = RecoveryBenchSettings.quick() if quick else RecoveryBenchSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        sagas=sagas or settings.sagas,
        concurrency=daemon_concurrency or settings.concurrency,
        seed=seed,
        postgres=backend == "postgres",
        pg_url=pg_url or settings.pg_url,
        daemons=daemons,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"--sagas {settings.sagas}"]
    flags += [f"--daemon-concurrency {settings.concurrency}", f"--seed {settings.seed}"]
    flags += [f"--backend {backend}"] + ([f"--daemons {daemons}"] if daemons > 1 else [])
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="Seconds, not minutes; SAGA_MAX_QUEUE=20.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 1).")
@click.option("--factor", type=click.FloatRange(0.1), help="Offered ÷ sustainable (default 2).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of overload (default 25).")
@click.option("--max-queue", type=click.IntRange(0), help="SAGA_MAX_QUEUE (default 2000).")
@_out_option("overload")
@_data_dir_option
@click.pass_context
def overload(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    factor: float | None,
    duration: float | None,
    max_queue: int | None,
    out: Path,
    data_dir: Path | None,
) -> None:
    """Twice the sustainable rate, open loop: 503 overloaded, bounded memory, nothing lost."""
    from bench.overload import OverloadSettings, run

    settings = OverloadSettings.quick() if quick else OverloadSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        factor=factor or settings.factor,
        overload_s=duration or settings.overload_s,
        max_queue=settings.max_queue if max_queue is None else max_queue,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"--factor {settings.factor:g}"]
    flags += [f"--duration {settings.overload_s:g}", f"--max-queue {settings.max_queue}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="One second, 4 writers, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("--processes", type=click.IntRange(2), help="Processes at once (default 2).")
@click.option("--writers", type=click.IntRange(1), help="Writers per process (default 16).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds each (default 8).")
@_out_option("contention")
@_data_dir_option
@click.pass_context
def contention(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    processes: int | None,
    writers: int | None,
    duration: float | None,
    out: Path,
    data_dir: Path | None,
) -> None:
    """Several processes writing one saga log at once, vs one alone: the lock's fairness."""
    from bench.contention import ContentionSettings, run

    settings = ContentionSettings.quick() if quick else ContentionSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        processes=processes or settings.processes,
        writers=writers or settings.writers,
        duration_s=duration or settings.duration_s,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"--processes {settings.processes}"]
    flags += [f"--writers {settings.writers}", f"--duration {settings.duration_s:g}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
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
@_out_option("ceiling")
@_data_dir_option
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
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
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
@_out_option("scale")
@_data_dir_option
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
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


@main.command()
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
@_out_option("peers")
@_data_dir_option
@click.pass_context
def peers(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrency: int | None,
    duration: float | None,
    no_install: bool,
    restate_server: Path | None,
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
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"-c {settings.concurrency}"]
    flags += [f"--duration {settings.duration_s:g}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)


_LOG_FLAGS: Final = {
    "SQLite log (FULL)": "sqlite",
    "PostgreSQL log": "postgres",
    "in-memory log": "memory",
}


def _replay(command_path: str, settings: EngineBenchSettings) -> str:
    """The command that repeats this measurement, every count spelled out."""
    flags = [f"--reps {settings.reps}", f"--sagas {settings.sagas}"]
    flags += [f"-c {c}" for c in settings.concurrencies]
    if settings.postgres:
        flags.append("--backend postgres")
    if settings.dbos:
        flags.append(f"--dbos-sagas {settings.dbos_sagas}")
        flags.append(f"--dbos-api {settings.dbos_api} --dbos-journal {settings.dbos_journal}")
    else:
        flags.append("--no-dbos")
    return " ".join([command_path, *flags])
