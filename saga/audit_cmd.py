"""`saga audit`: read the snapshot, check it, print the report."""

from __future__ import annotations

import json
from collections.abc import Mapping

import click

from engine.log_settings import LogBackend, SagaLogSettings
from orders.audit import audit
from orders.audit_io import read_snapshot, wait_until_settled
from orders.participants import ServiceAddresses


def run_audit(env: Mapping[str, str], *, wait_s: float, as_json: bool) -> int:
    settings = SagaLogSettings.from_env(env)
    services = ServiceAddresses.from_env(env)  # a bad setting stops it before any wait
    if settings.backend is LogBackend.SQLITE and not settings.path.exists():
        click.echo(f"saga: error: no saga log at {settings.path} (set SAGA_DATA_DIR)", err=True)
        return 2
    if wait_s > 0:
        wait_until_settled(settings, wait_s)
    report = audit(read_snapshot(settings, services))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "orders": report.orders,
                    "by_status": report.by_status,
                    "violations": [
                        {"invariant": v.invariant, "subject": v.subject, "message": v.message}
                        for v in report.violations
                    ],
                },
                indent=2,
            )
        )
    else:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(report.by_status.items()))
        click.echo(f"audited {report.orders} orders ({statuses or 'none'})")
        for v in report.violations:
            click.echo(f"VIOLATION {v}")
        click.echo("all invariants hold" if report.ok else f"{len(report.violations)} violations")
    return 0 if report.ok else 1
