"""docker-compose.postgres.yml checked without a Docker engine: merged over
docker-compose.yml as compose merges an override (mappings merged key by key, `!reset`
and `!override` replace), every container of ours gets settings its process accepts, every
process names the one database the PostgreSQL container creates, no saga container keeps a
SQLite file, and nginx and Prometheus reach every replica where it listens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from engine.log_settings import LogBackend
from engine.net import DnsName
from gateway.settings import GatewaySettings
from recovery.settings import RecoverySettings
from services.settings import ServiceSettings
from tests.obs.test_compose import KNOWN_SETTINGS, PARTICIPANTS, env_of, mounts, published

ROOT = Path(__file__).resolve().parents[2]


class _Replace:
    """A value tagged `!reset` or `!override`: it replaces the base's, never merges."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Loader(yaml.SafeLoader):
    pass


def _replace(loader: yaml.SafeLoader, node: yaml.Node) -> _Replace:
    if isinstance(node, yaml.SequenceNode):
        return _Replace(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return _Replace(loader.construct_mapping(node, deep=True))
    return _Replace(loader.construct_scalar(node))  # type: ignore[arg-type]


for _tag in ("!reset", "!override"):
    _Loader.add_constructor(_tag, _replace)


def merge(base: Any, over: Any) -> Any:
    if isinstance(over, _Replace):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else unwrap(value)
        return out
    return unwrap(over)


def unwrap(value: Any) -> Any:
    if isinstance(value, _Replace):
        return value.value
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


BASE = yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=_Loader)
OVERRIDE = yaml.load((ROOT / "docker-compose.postgres.yml").read_text(), Loader=_Loader)
MERGED: dict[str, Any] = merge(BASE, OVERRIDE)
SERVICES: dict[str, dict[str, Any]] = MERGED["services"]
OURS = {name: svc for name, svc in SERVICES.items() if "build" in svc}


def replicas(name: str) -> int:
    return int((SERVICES[name].get("deploy") or {}).get("replicas", 1))


def database_of(name: str) -> str:
    """The database URL the PostgreSQL container's own settings make, as the others see it."""
    env = env_of(SERVICES[name])
    return f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{name}:5432/{env['POSTGRES_DB']}"


def test_the_stack_runs_two_gateways_and_two_replicas_of_each_service() -> None:
    assert set(OURS) == {"order", "payment", "inventory", "gateway", "recovery"}
    assert replicas("gateway") == 2
    assert all(replicas(name) == 2 for name in PARTICIPANTS)
    assert {"postgres", "gateway-lb"} <= set(SERVICES)


def test_every_process_uses_the_one_database_and_no_sqlite_file() -> None:
    url = database_of("postgres")
    for name, svc in OURS.items():
        env = env_of(svc)
        assert not set(env) - KNOWN_SETTINGS, f"{name}: not settings of the project"
        assert not mounts(svc), f"{name} keeps a volume: its state belongs in PostgreSQL"
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
    for settings in (
        GatewaySettings.from_env(env_of(SERVICES["gateway"])).drive.log,
        RecoverySettings.from_env(env_of(SERVICES["recovery"])).drive.log,
    ):
        assert settings.backend is LogBackend.POSTGRES
        assert settings.database is not None and settings.database.dsn == url
    for name in PARTICIPANTS:
        env = env_of(SERVICES[name])
        assert env[f"{name.upper()}_DATABASE_URL"] == url
        ServiceSettings.from_env(name, env)  # accepted as it stands


def test_callers_spread_over_every_replica_by_name() -> None:
    for caller in ("gateway", "recovery"):
        services = GatewaySettings.from_env(env_of(SERVICES[caller])).drive.services
        for name in PARTICIPANTS:
            target = getattr(services, name)
            assert isinstance(target, DnsName), f"{caller} reaches {name} at one replica only"
            listens = ServiceSettings.from_env(name, env_of(SERVICES[name])).addr
            assert target.host == name and target.port == listens[1]


def test_only_nginx_and_postgres_publish_host_ports_and_nginx_reaches_the_gateways() -> None:
    for name in (*PARTICIPANTS, "gateway"):
        assert not published(SERVICES[name]), f"{name}'s replicas would fight over a host port"
    assert published(SERVICES["gateway-lb"]) == [(8080, 8080)]
    conf = (ROOT / "deploy/nginx/gateways.conf").read_text()
    mount = dict(mounts(SERVICES["gateway-lb"]))
    assert mount["./deploy/nginx/gateways.conf"] == "/etc/nginx/conf.d/default.conf"
    port = GatewaySettings.from_env(env_of(SERVICES["gateway"])).http_addr[1]
    assert re.search(rf"server gateway:{port} resolve\b", conf)
    assert "listen 8080;" in conf
    # A POST is never sent twice by the proxy: only an unreachable gateway is skipped.
    assert re.search(r"proxy_next_upstream error;", conf)


def test_prometheus_scrapes_every_replica_where_it_listens() -> None:
    mount = dict(mounts(SERVICES["prometheus"]))
    config_path = next(src for src, dst in mount.items() if dst.endswith("prometheus.yml"))
    config = yaml.safe_load((ROOT / config_path).read_text())
    found = {
        (name, int(sd["port"]))
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    for name in PARTICIPANTS:
        metrics = ServiceSettings.from_env(name, env_of(SERVICES[name])).metrics_addr
        assert metrics is not None and (name, metrics[1]) in found
    assert ("gateway", 8080) in found
    assert urlsplit(database_of("postgres")).port == 5432
