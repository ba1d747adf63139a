"""What the benchmark commands share: the output folder and data folder options, and how
a command prints its progress and its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["data_dir_option", "echo_report", "out_option", "progress"]


def out_option(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("bench/out"),
        show_default=True,
        help=f"Folder for {name}.md, {name}.json (and {name}.png where there is a chart).",
    )


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where the temporary data folders go (default: the system temp dir); choose the "
    "disk you want to measure.",
)


def echo_report(markdown: str, files: tuple[Path, ...]) -> None:
    click.echo(markdown)
    for path in files:
        click.echo(f"wrote {path}", err=True)


def progress(line: str) -> None:
    click.echo(line, err=True)
