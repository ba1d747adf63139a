"""`python -m bench`: one subcommand per benchmark.

Only this command line runs the benchmarks. They depend on the product (the engine, the
`saga` processes, saga.children, saga.probes) and never the other way round: the `saga`
command has no benchmark subcommand, and no product package imports `bench`.

Each subcommand builds its frozen settings from its flags and hands them to its module's
`run`; the benchmark modules are imported inside the commands, so one benchmark's
missing extra cannot break another's command. The commands of the benchmarks that drive
the whole stack over HTTP (e2e, ceiling, scale, peers) are in bench/cli_stack.py; what
the commands share is bench/cli_common.py; what the benchmarks share is bench/report.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.cli_common import data_dir_option, echo_report, out_option, progress
from bench.cli_stack import ceiling, e2e, peers, scale

if TYPE_CHECKING:
    from bench.engine import EngineBenchSettings

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of the saga engine. Not tests: they print numbers beside baselines
    measured in the same run, and assert nothing about time."""


for _command in (e2e, ceiling, scale, peers):  # bench/cli_stack.py
    main.add_command(_command)


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
@out_option("recovery")
@data_dir_option
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
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="Seconds, not minutes; SAGA_MAX_QUEUE=20.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 1).")
@click.option("--factor", type=click.FloatRange(0.1), help="Offered ÷ sustainable (default 2).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of overload (default 25).")
@click.option("--max-queue", type=click.IntRange(0), help="SAGA_MAX_QUEUE (default 2000).")
@out_option("overload")
@data_dir_option
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
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="One second, 4 writers, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("--processes", type=click.IntRange(2), help="Processes at once (default 2).")
@click.option("--writers", type=click.IntRange(1), help="Writers per process (default 16).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds each (default 8).")
@out_option("contention")
@data_dir_option
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
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


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


@main.command()
@click.option("--quick", is_flag=True, help="One second at concurrency 4, 100 calls, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Connections (default 64).")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of load (default 6).")
@click.option("--calls", type=click.IntRange(1), help="Calls to the service alone (default 3000).")
@click.option("--workers", type=click.IntRange(1), help="SAGA_GATEWAY_WORKERS (default 1).")
@out_option("cost")
@data_dir_option
@click.pass_context
def cost(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrency: int | None,
    duration: float | None,
    calls: int | None,
    workers: int | None,
    out: Path,
    data_dir: Path | None,
) -> None:
    """CPU per order of every process of the stack, and of a service alone per call."""
    from bench.cost import CostSettings, run

    settings = CostSettings.quick() if quick else CostSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrency=concurrency or settings.concurrency,
        duration_s=duration or settings.duration_s,
        calls=calls or settings.calls,
        workers=workers or settings.workers,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"-c {settings.concurrency}"]
    flags += [f"--duration {settings.duration_s:g}", f"--workers {settings.workers}"]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)


@main.command()
@click.option("--quick", is_flag=True, help="1,000 calls at 16 in flight, one pool size, one rep.")
@click.option("--reps", type=click.IntRange(1), help="Repetitions (default 3).")
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Calls in flight (default 64).")
@click.option("--calls", type=click.IntRange(1), help="Calls per server (default 10,000).")
@click.option(
    "--sync-workers",
    type=click.IntRange(1),
    multiple=True,
    help="Thread pool sizes of the synchronous no-op server; repeat for several, the "
    "best is its row (default 4 16).",
)
@out_option("floor")
@data_dir_option
@click.pass_context
def floor(
    ctx: click.Context,
    quick: bool,
    reps: int | None,
    concurrency: int | None,
    calls: int | None,
    sync_workers: tuple[int, ...],
    out: Path,
    data_dir: Path | None,
) -> None:
    """Server CPU per gRPC call: no-op grpc.aio and sync servers vs the payment service."""
    from bench.floor import FloorSettings, run

    settings = FloorSettings.quick() if quick else FloorSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrency=concurrency or settings.concurrency,
        calls=calls or settings.calls,
        sync_workers=sync_workers or settings.sync_workers,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"-c {settings.concurrency}", f"--calls {settings.calls}"]
    flags += [f"--sync-workers {w}" for w in settings.sync_workers]
    settings = replace(settings, command=" ".join([ctx.command_path, *flags]))
    report = run(settings, progress)
    echo_report(report.markdown, report.files)
