"""`saga`: the console script of the contract. Each subcommand builds its settings from
the environment (flags may override) and hands them to its package's entry point.

Imports are inside the commands so that `saga service order` does not load FastAPI, and a
mistake in one package cannot break another's command.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from engine.errors import EngineError
from saga.ops import cancel_command, check_wait, ls_command, retry_command, show_command
from saga.prune_cmd import prune_command

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"saga: error: {message}", err=True)
    sys.exit(code)


def clear_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A user's mistake (bad setting, unusable file) is one line on stderr, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except EngineError as exc:
            fail(exc.message)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A durable saga engine that survives crashes: the e-commerce order stack."""


# Operator tools (saga/ops.py): ls, show, retry, cancel; saga/prune_cmd.py: prune.
for _command in (ls_command, show_command, retry_command, cancel_command, prune_command):
    main.add_command(_command)


@main.command()
@clear_errors
def up() -> None:
    """Run the whole stack on this machine (services, gateway, recovery daemon).

    Ctrl-C or SIGTERM stops every child cleanly.
    """
    from saga.up import run_up

    sys.exit(run_up(os.environ))


@main.command()
@click.argument("name", type=click.Choice(["order", "payment", "inventory"]))
@clear_errors
def service(name: str) -> None:
    """Run one participant gRPC service: order, payment or inventory."""
    from services.main import run_service

    run_service(name, os.environ)


@main.command()
@clear_errors
def recovery() -> None:
    """Run the recovery daemon: claim unfinished sagas nobody drives and finish them.

    With SAGA_HISTORY_RETENTION (30d) it also prunes finished sagas' step history.
    """
    from recovery.main import run_recovery

    run_recovery(os.environ)


@main.command()
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for running sagas to finish before checking.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@clear_errors
def audit(wait_s: float, as_json: bool) -> None:
    """Check the contract's invariants across the saga log and the three services.

    Prints every violation with its order id; exits 1 if there is any, 0 if none.
    """
    from saga.audit_cmd import run_audit

    sys.exit(run_audit(os.environ, wait_s=check_wait(wait_s), as_json=as_json))


@main.command()
# A worker of SAGA_GATEWAY_WORKERS: the listening socket it inherited (gateway/workers.py).
@click.option("--listen-fd", type=click.IntRange(0), hidden=True)
@clear_errors
def gateway(listen_fd: int | None) -> None:
    """Run the HTTP order API and its saga runner (HTTP_ADDR, default 127.0.0.1:8080).

    SIGTERM or Ctrl-C stops it gracefully: sagas in flight get SAGA_DRAIN_S to finish,
    the rest are handed back to the log for the next runner. SAGA_GATEWAY_WORKERS=N
    serves the port with N worker processes.
    """
    from gateway.main import run_gateway

    sys.exit(run_gateway(os.environ, listen_fd=listen_fd))


@main.command()
@click.argument("kind", type=click.Choice(["grpc", "http"]))
@click.argument("target")
@click.option("--service", default="", help="gRPC: the service to check (default: the server).")
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
@clear_errors
def probe(kind: str, target: str, service: str, timeout_s: float) -> None:
    """Health probe for container healthchecks: exit 0 when TARGET is healthy, else 1.

    \b
    saga probe grpc 127.0.0.1:9090           # the standard gRPC health check
    saga probe http http://127.0.0.1:8080/healthz

    A gRPC probe presents SAGA_GRPC_TLS_CERT/_KEY/_CA when they are set (mutual TLS).
    """
    from saga.probes import probe_grpc, probe_http

    if kind == "grpc":
        from engine.net import env_tls

        why = probe_grpc(target, service, timeout_s, env_tls(os.environ))
    else:
        why = probe_http(target, timeout_s)
    if why is not None:
        click.echo(f"saga: probe: {why}", err=True)
        sys.exit(1)
