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
from typing import TYPE_CHECKING

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
    no_chart: bool,
    out: Path,
    data_dir: Path | None,
) -> None:
    """HTTP POST /orders to terminal saga on the real stack: durable log vs in-memory log."""
    from bench.e2e import E2eSettings, run

    settings = E2eSettings.quick() if quick else E2eSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        concurrencies=concurrencies or settings.concurrencies,
        duration_s=duration or settings.duration_s,
        warmup_s=settings.warmup_s if warmup is None else warmup,
        redis=not no_redis,
        chart=not no_chart,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", *(f"-c {c}" for c in settings.concurrencies)]
    flags += [f"--duration {settings.duration_s:g}", f"--warmup {settings.warmup_s:g}"]
    flags += [] if settings.redis else ["--no-redis"]
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
    out: Path,
    data_dir: Path | None,
) -> None:
    """One saga recovery daemon against sagas left unfinished at random steps, vs fresh."""
    from bench.recovery import RecoveryBenchSettings, run

    settings = RecoveryBenchSettings.quick() if quick else RecoveryBenchSettings()
    settings = replace(
        settings,
        reps=reps or settings.reps,
        sagas=sagas or settings.sagas,
        concurrency=daemon_concurrency or settings.concurrency,
        seed=seed,
        out=out,
        data_dir=data_dir,
    )
    flags = [f"--reps {settings.reps}", f"--sagas {settings.sagas}"]
    flags += [f"--daemon-concurrency {settings.concurrency}", f"--seed {settings.seed}"]
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


def _replay(command_path: str, settings: EngineBenchSettings) -> str:
    """The command that repeats this measurement, every count spelled out."""
    flags = [f"--reps {settings.reps}", f"--sagas {settings.sagas}"]
    flags += [f"-c {c}" for c in settings.concurrencies]
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
@_out_option("cost")
@_data_dir_option
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
    report = run(settings, _progress)
    _echo_report(report.markdown, report.files)
