"""`python -m bench` (and `saga bench`): one subcommand per benchmark.

Each subcommand builds its frozen settings from its flags and hands them to its module's
`run`; the benchmark modules are imported inside the commands, so one benchmark's
missing extra cannot break another's command. More benchmarks (end-to-end HTTP, recovery
of a large backlog, overload) are added here as further subcommands sharing bench/report.py.
"""

from __future__ import annotations

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
