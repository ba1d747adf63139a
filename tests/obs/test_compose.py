"""docker-compose.yml and deploy/ checked without a Docker engine: everything that can be
checked from the files. Each saga container runs a real `saga` subcommand with settings
the project's own settings classes accept; volumes, ports and service addresses agree;
Prometheus scrapes every process where it listens; spans flow collector -> Tempo; logs
flow Docker -> Alloy -> Loki; Grafana is provisioned with its data sources, linked to each
other by uid (a log line's trace id opens Tempo, a trace opens its logs in Loki), and a
dashboard that only queries metrics the code exports (names collected from the registries
themselves) and shows one saga's logs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import yaml
from prometheus_client import CollectorRegistry

from engine.metrics import SagaMetrics
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from recovery.settings import RecoverySettings
from saga.cli import main
from services.common.observe import RpcMetrics
from services.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


COMPOSE: dict[str, Any] = load(ROOT / "docker-compose.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The containers of the project's own image (the rest are off-the-shelf images).
OURS = {name: svc for name, svc in SERVICES.items() if "build" in svc}
PARTICIPANTS = ("order", "payment", "inventory")

# Every setting docs/reference.md documents; a typo is not a setting.
KNOWN_SETTINGS = {
    "SAGA_DATA_DIR", "SAGA_LOG_DB_PATH", "REDIS_URL", "SAGA_LEASE_S",
    "SAGA_RECOVERY_INTERVAL_S", "SAGA_RECOVERY_CONCURRENCY", "INVENTORY_SEED_STOCK",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "SAGA_ADMIN_TOKEN", "HTTP_ADDR", "RECOVERY_METRICS_ADDR",
    "ORDER_SERVICE_ADDR", "PAYMENT_SERVICE_ADDR", "INVENTORY_SERVICE_ADDR",
    "ORDER_METRICS_ADDR", "PAYMENT_METRICS_ADDR", "INVENTORY_METRICS_ADDR",
    "SAGA_SQLITE_SYNCHRONOUS", "SAGA_SQLITE_BUSY_TIMEOUT_MS", "SAGA_SHUTDOWN_GRACE_S",
    "SAGA_RUNNER_CAPACITY", "SAGA_MAX_QUEUE", "SAGA_DRAIN_S", "SAGA_MAX_BODY_BYTES",
    "SAGA_READY_TIMEOUT_S", "SAGA_LOG_FORMAT", "SAGA_LOG_LEVEL", "SAGA_HISTORY_RETENTION",
    "SAGA_PRUNE_INTERVAL_S", "SAGA_REDIS_TIMEOUT_MS", "SAGA_UI_TRACE_URL",
    "SAGA_DATABASE_URL", "ORDER_DATABASE_URL", "PAYMENT_DATABASE_URL", "INVENTORY_DATABASE_URL",
}  # fmt: skip
# The one host path a container may mount: Alloy reads the containers' logs from Docker.
DOCKER_SOCKET = "/var/run/docker.sock"


# ---- reading the compose file -------------------------------------------------------------


def env_of(svc: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as compose resolves it with nothing set on the host:
    ${NAME:-default} is the default, ${NAME} is empty."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)

    def resolve(value: object) -> str:
        text = "" if value is None else str(value)
        return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)

    return {str(k): resolve(v) for k, v in raw.items()}


def mounts(svc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume: a named volume, or a ./path bind mount."""
    out = []
    for item in svc.get("volumes") or []:
        if isinstance(item, dict):
            out.append((str(item["source"]), str(item["target"])))
        else:
            source, target = str(item).split(":")[:2]
            out.append((source, target))
    return out


def named_volume_holding(svc: Mapping[str, Any], path: Path) -> str | None:
    """The named volume mounted over `path` in this container, if any."""
    for source, target in mounts(svc):
        if not source.startswith((".", "/")) and path.is_relative_to(target):
            return source
    return None


def published(svc: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each published port."""
    out = []
    for item in svc.get("ports") or []:
        if isinstance(item, dict):
            out.append((int(item["published"]), int(item["target"])))
        else:
            *_, host, container = str(item).split(":")
            out.append((int(host), int(container.split("/")[0])))
    return out


def port_of(url_or_addr: str) -> tuple[str, int]:
    """(host, port) of `host:port` or `scheme://host:port/...`."""
    parts = urlsplit(url_or_addr if "://" in url_or_addr else f"//{url_or_addr}")
    assert parts.hostname is not None and parts.port is not None, url_or_addr
    return parts.hostname, parts.port


def service_settings(name: str) -> ServiceSettings:
    return ServiceSettings.from_env(name, env_of(SERVICES[name]))


def gateway_settings() -> GatewaySettings:
    return GatewaySettings.from_env(env_of(SERVICES["gateway"]))


def recovery_settings() -> RecoverySettings:
    return RecoverySettings.from_env(env_of(SERVICES["recovery"]))


def listens(name: str) -> set[int]:
    """The ports a container of ours listens on, from its own settings."""
    if name in PARTICIPANTS:
        s = service_settings(name)
        return {s.addr[1]} | ({s.metrics_addr[1]} if s.metrics_addr else set())
    if name == "gateway":
        return {gateway_settings().http_addr[1]}
    return {recovery_settings().metrics_addr[1]}


def metrics_port(name: str) -> int:
    if name in PARTICIPANTS:
        addr = service_settings(name).metrics_addr
        assert addr is not None, f"{name} publishes no metrics"
        return addr[1]
    if name == "gateway":
        return gateway_settings().http_addr[1]  # /metrics on the API's own port
    return recovery_settings().metrics_addr[1]


def saga_command(argv: list[str]) -> click.Command:
    """Resolve `saga ARGV...` against the real click group: an unknown subcommand or a bad
    argument raises, exactly as the container would fail at start."""
    name, *rest = argv
    root = click.Context(main, info_name="saga")
    command = main.get_command(root, name)
    assert command is not None, f"`saga {name}` is not a subcommand of saga/cli.py"
    command.make_context(name, list(rest), parent=root)
    return command


# ---- the stack ----------------------------------------------------------------------------


def test_the_whole_stack_is_there() -> None:
    assert set(OURS) == {"order", "payment", "inventory", "gateway", "recovery"}
    assert {"redis", "otel-collector", "tempo", "prometheus", "grafana", "loki", "alloy"} <= set(
        SERVICES
    )


def test_every_saga_container_runs_a_real_saga_subcommand() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install /src\b", dockerfile, re.M), "the image installs the project"
    assert re.search(r'^ENTRYPOINT \["saga"\]', dockerfile, re.M)
    images = {svc["image"] for svc in OURS.values()}
    assert len(images) == 1, "one image for every process"
    for name, svc in OURS.items():
        assert "entrypoint" not in svc, name
        assert svc["build"] == "."
        command = svc["command"]
        assert saga_command(command).name in {"service", "gateway", "recovery"}, name
        if command[0] == "service":
            assert command[1:] == [name], "each participant runs as its own compose service"


def test_every_saga_container_gets_settings_its_process_accepts() -> None:
    collector_grpc = port_of(load(DEPLOY / "otel-collector/config.yaml")["receivers"]["otlp"]
                             ["protocols"]["grpc"]["endpoint"])[1]  # fmt: skip
    for name, svc in OURS.items():
        env = env_of(svc)
        unknown = set(env) - KNOWN_SETTINGS
        assert not unknown, f"{name}: not settings of the project: {unknown}"
        assert port_of(env["OTEL_EXPORTER_OTLP_ENDPOINT"]) == ("otel-collector", collector_grpc)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://"), "no TLS in the stack"
    for name in PARTICIPANTS:
        s = service_settings(name)
        # Reachable from the other containers: bound on every interface of its own.
        assert s.addr[0] == "0.0.0.0" and s.metrics_addr is not None
        assert s.metrics_addr[0] == "0.0.0.0"
    gateway, recovery = gateway_settings(), recovery_settings()
    assert gateway.http_addr == ("0.0.0.0", 8080)  # the seed's port
    assert recovery.metrics_addr[0] == "0.0.0.0"
    assert gateway.admin_token is None, "admin routes closed unless the operator sets a token"
    assert gateway.redis_url is not None and urlsplit(gateway.redis_url).hostname == "redis"


def test_the_gateway_and_the_daemon_reach_the_services_by_compose_name() -> None:
    for settings in (gateway_settings().drive.services, recovery_settings().drive.services):
        for name in PARTICIPANTS:
            host, port = getattr(settings, name)
            assert host == name, f"{name} is reached at {host}, not its compose service name"
            assert port == service_settings(name).addr[1], f"{name} listens elsewhere"


def test_every_sqlite_file_is_on_a_named_volume_and_the_log_is_shared() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, svc in SERVICES.items():
        for source, _ in mounts(svc):
            if source == DOCKER_SOCKET:
                assert name == "alloy", f"{name} mounts the Docker socket"
                assert f"{DOCKER_SOCKET}:{DOCKER_SOCKET}:ro" in svc["volumes"], "read-only"
            elif source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"

    ledgers = {}
    for name in PARTICIPANTS:
        ledgers[name] = named_volume_holding(SERVICES[name], service_settings(name).ledger_path)
        assert ledgers[name] is not None, f"{name}'s ledger is not on a named volume"
    assert len(set(ledgers.values())) == 3, "one volume per ledger"

    gateway_log = gateway_settings().drive.log.path
    recovery_log = recovery_settings().drive.log.path
    assert gateway_log == recovery_log, "the gateway and the daemon must open the same saga.db"
    log_volume = named_volume_holding(SERVICES["gateway"], gateway_log)
    assert log_volume is not None
    assert named_volume_holding(SERVICES["recovery"], recovery_log) == log_volume
    assert log_volume not in ledgers.values()
    # Grafana keeps its state in SQLite too.
    assert named_volume_holding(SERVICES["grafana"], Path("/var/lib/grafana/grafana.db"))


def test_published_ports_are_distinct_and_each_is_one_its_container_listens_on() -> None:
    off_the_shelf = {
        "redis": {6379}, "otel-collector": {4317, 4318}, "tempo": {3200, 4317},
        "prometheus": {9090}, "grafana": {3000}, "tempo-init": set(),
        "loki": {3100}, "loki-init": set(), "alloy": set(),
    }  # fmt: skip
    hosts: dict[int, str] = {}
    for name, svc in SERVICES.items():
        listening = listens(name) if name in OURS else off_the_shelf[name]
        for host, container in published(svc):
            assert host not in hosts, f"{name} and {hosts[host]} both publish {host}"
            hosts[host] = name
            assert container in listening, f"{name} publishes {container}, where nothing listens"
    assert hosts[8080] == "gateway"
    assert hosts[3000] == "grafana"
    assert hosts[9090] == "order", "the contract's port of the Order service"
    assert "prometheus" in hosts.values()


def test_healthchecks_probe_each_process_where_it_listens() -> None:
    for name, svc in OURS.items():
        test = svc["healthcheck"]["test"]
        assert test[:2] == ["CMD", "saga"], name
        assert saga_command(test[2:]).name == "probe"
        kind, target = test[3], test[4]
        if name in PARTICIPANTS:
            assert kind == "grpc"
            assert port_of(target)[1] == service_settings(name).addr[1]
        elif name == "gateway":
            assert (kind, urlsplit(target).path) == ("http", "/healthz")
            assert port_of(target)[1] == gateway_settings().http_addr[1]
        else:
            assert (kind, urlsplit(target).path) == ("http", "/metrics")
            assert port_of(target)[1] == recovery_settings().metrics_addr[1]
    for name in ("gateway", "recovery"):
        depends = SERVICES[name]["depends_on"]
        for participant in PARTICIPANTS:
            assert depends[participant]["condition"] == "service_healthy", (name, participant)


# ---- metrics, traces, dashboards ----------------------------------------------------------


def test_prometheus_scrapes_every_process_where_it_serves_metrics() -> None:
    config = load(DEPLOY / "prometheus/prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {f"{name}:{metrics_port(name)}" for name in OURS}
    mounted = dict(mounts(SERVICES["prometheus"]))
    assert mounted["./deploy/prometheus/prometheus.yml"] in " ".join(
        SERVICES["prometheus"]["command"]
    )


def test_spans_flow_from_the_collector_to_tempo_and_grafana_reads_them() -> None:
    collector = load(DEPLOY / "otel-collector/config.yaml")
    tempo = load(DEPLOY / "tempo/tempo.yaml")
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    (exporter,) = pipeline["exporters"]
    tempo_otlp = port_of(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]
                         ["endpoint"])[1]  # fmt: skip
    assert port_of(collector["exporters"][exporter]["endpoint"]) == ("tempo", tempo_otlp)
    # Each container reads the config file mounted where its command looks for it.
    for name, path in (("otel-collector", "./deploy/otel-collector/config.yaml"),
                       ("tempo", "./deploy/tempo/tempo.yaml")):  # fmt: skip
        target = dict(mounts(SERVICES[name]))[path]
        assert any(arg.endswith("=" + target) for arg in SERVICES[name]["command"]), name
    sources = load(DEPLOY / "grafana/provisioning/datasources/datasources.yaml")["datasources"]
    urls = {ds["type"]: port_of(ds["url"]) for ds in sources}
    assert urls["tempo"] == ("tempo", tempo["server"]["http_listen_port"])
    assert urls["prometheus"] == ("prometheus", 9090)


def grafana_mount(container_path: str) -> Path:
    """The repo folder that Grafana sees at `container_path`."""
    for source, target in mounts(SERVICES["grafana"]):
        if source.startswith(".") and Path(container_path).is_relative_to(target):
            return ROOT / source / Path(container_path).relative_to(target)
    raise AssertionError(f"nothing of the repo is mounted at {container_path} in grafana")


def dashboards() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((DEPLOY / "grafana/dashboards").glob("*.json")):
        yield path, json.loads(path.read_text())


def test_grafana_is_provisioned_with_its_sources_and_the_dashboard() -> None:
    providers = grafana_mount("/etc/grafana/provisioning/dashboards")
    (provider,) = load(providers / "dashboards.yaml")["providers"]
    folder = grafana_mount(provider["options"]["path"])
    assert folder == DEPLOY / "grafana/dashboards"
    assert [p.name for p, _ in dashboards()] == ["saga.json"]
    home = env_of(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana_mount(home).is_file()
    sources = grafana_mount("/etc/grafana/provisioning/datasources") / "datasources.yaml"
    uids = {ds["uid"] for ds in load(sources)["datasources"]}
    for _, dash in dashboards():
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] in uids, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, panel["title"]


# PromQL words that are not metric names (grouping labels are removed before this).
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions or
    aggregations (followed by "("), label matchers, ranges, grouping labels or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[m.end() :].lstrip().startswith("(") or m.group(0).lower() in _PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, step) (rate(a_seconds_bucket{kind="x"}[1m])))'
    ) == {"a_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / on (job) sum(b) offset 5m > bool 0") == {
        "a_total", "b",
    }  # fmt: skip
    assert metric_names('max(c{status="NEEDS_ATTENTION"}) or vector(0)') == {"c"}


def exported_series() -> dict[str, str]:
    """Every series name the processes can publish -> its metric type, from fresh
    registries of the real metric classes (what /metrics renders)."""
    registries = [CollectorRegistry(), CollectorRegistry(), CollectorRegistry()]
    SagaMetrics(registries[0], recovery=True)
    GatewayMetrics(registries[1])
    RpcMetrics("order", registries[2])
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix: family.type
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes[family.type]
    }


def test_the_dashboard_queries_only_metrics_the_code_exports() -> None:
    exported = exported_series()
    queried: set[str] = set()
    for path, dash in dashboards():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] != "prometheus":
                    continue
                names = metric_names(target["expr"])
                assert names, f"{path.name}: {panel['title']}: no metric in {target['expr']}"
                unknown = names - set(exported)
                assert not unknown, f"{path.name}: {panel['title']}: not exported: {unknown}"
                queried |= names
    # The saga story the dashboard tells.
    assert {
        "saga_finished_total",  # throughput by outcome
        "saga_step_duration_seconds_bucket",  # step latency p50/p99
        "saga_inflight",
        "saga_oldest_unfinished_age_seconds",
        "saga_recovered_total",
        "saga_sagas",  # parked = NEEDS_ATTENTION
        "saga_idempotency_hits_total",
        "saga_log_commit_seconds_bucket",
        "saga_service_rpc_total",
    } <= queried


def test_the_observability_page_s_metrics_table_is_what_the_code_exports() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    section = page.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(saga_[a-z_]+)` \|", section, re.M))
    exported = exported_series()
    # The table names a counter as its series (`_total`), a histogram by its family name.
    families = {
        name.removesuffix("_bucket")
        for name, kind in exported.items()
        if kind != "histogram" or name.endswith("_bucket")
    }
    assert documented == families


# ---- logs: Docker -> Alloy -> Loki, and Grafana's links between logs and traces ------------


def alloy_config() -> str:
    path = "./deploy/alloy/config.alloy"
    target = dict(mounts(SERVICES["alloy"]))[path]
    assert target in SERVICES["alloy"]["command"], "alloy runs the config it is given"
    return (ROOT / path).read_text()


def alloy_block(config: str, kind: str) -> str:
    """The body of the first `kind "name" { ... }` block (balanced braces)."""
    start = re.search(rf'^{re.escape(kind)} "[^"]+" \{{', config, re.M)
    assert start, f"no {kind} block in config.alloy"
    depth, i = 0, start.end() - 1
    for j in range(i, len(config)):
        depth += {"{": 1, "}": -1}.get(config[j], 0)
        if depth == 0:
            return config[i + 1 : j]
    raise AssertionError(f"unbalanced {kind} block")


def datasources() -> dict[str, dict[str, Any]]:
    path = grafana_mount("/etc/grafana/provisioning/datasources") / "datasources.yaml"
    return {ds["type"]: ds for ds in load(path)["datasources"]}


def grafana_text(value: str) -> str:
    """A provisioned string as Grafana reads it: `$$` is a literal `$`."""
    return value.replace("$$", "$")


def test_the_saga_processes_logs_flow_through_alloy_to_loki() -> None:
    config = alloy_config()
    loki = load(DEPLOY / "loki/loki.yaml")
    loki_port = loki["server"]["http_listen_port"]
    assert dict(mounts(SERVICES["loki"]))["./deploy/loki/loki.yaml"] in " ".join(
        SERVICES["loki"]["command"]
    )
    # Loki keeps its data on its volume, handed to its user first.
    data = named_volume_holding(SERVICES["loki"], Path(loki["common"]["path_prefix"]))
    assert data is not None and named_volume_holding(SERVICES["loki-init"], Path("/loki")) == data
    assert loki["limits_config"]["allow_structured_metadata"] is True
    # Alloy reads the project's containers from Docker...
    docker = alloy_block(config, "discovery.docker")
    assert f'"unix://{DOCKER_SOCKET}"' in docker
    assert f"com.docker.compose.project={COMPOSE['name']}" in docker
    keep = re.search(r'regex\s*=\s*"([^"]+)"\s*\n\s*action\s*=\s*"keep"', config)
    assert keep and set(keep.group(1).split("|")) == set(OURS), "every saga process, only those"
    # ... lifts what a line says about its saga and trace, never as labels ...
    process = alloy_block(config, "loki.process")
    for field in ("level", "process", "saga_id", "trace_id"):
        assert f'{field} = "{field}"' in process, field
    labels = re.search(r"stage\.labels \{\s*values = \{([^}]*)\}", process)
    metadata = re.search(r"stage\.structured_metadata \{\s*values = \{([^}]*)\}", process)
    assert labels and metadata
    assert "saga_id" not in labels.group(1) and "trace_id" not in labels.group(1)
    assert "saga_id" in metadata.group(1) and "trace_id" in metadata.group(1)
    # ... and pushes them to Loki where it listens.
    write = re.search(r'url\s*=\s*"([^"]+)"', alloy_block(config, "loki.write"))
    assert write and port_of(write.group(1)) == ("loki", loki_port)
    assert urlsplit(write.group(1)).path == "/loki/api/v1/push"
    assert port_of(datasources()["loki"]["url"]) == ("loki", loki_port)


def test_logs_and_traces_link_to_each_other_by_uid() -> None:
    sources = datasources()
    loki, tempo = sources["loki"], sources["tempo"]
    # A log line's trace id opens the trace in Tempo...
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == tempo["uid"]
    assert grafana_text(derived["url"]) == "${__value.raw}"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    line = json.dumps({"level": "INFO", "saga_id": "s-1", "trace_id": trace_id, "span_id": "x"})
    found = re.search(derived["matcherRegex"], line)
    assert found and found.group(1) == trace_id, "the regex must read the JSON lines we write"
    # ... and a trace opens its lines in Loki, in the stream Alloy writes them to.
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == loki["uid"]
    query = grafana_text(to_logs["query"])
    assert "${__trace.traceId}" in query
    job = re.search(r'labels\s*=\s*\{job = "([^"]+)"\}', alloy_config())
    assert job and f'job="{job.group(1)}"' in query
    assert tempo["jsonData"]["lokiSearch"]["datasourceUid"] == loki["uid"]


def test_the_dashboard_shows_one_saga_s_logs() -> None:
    (dash,) = [d for _, d in dashboards()]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["saga_id"]["type"] == "textbox"
    (panel,) = [p for p in dash["panels"] if p["type"] == "logs"]
    assert panel["datasource"] == {"type": "loki", "uid": datasources()["loki"]["uid"]}
    (target,) = panel["targets"]
    assert "saga_id" in target["expr"] and "$saga_id" in target["expr"]
    job = re.search(r'labels\s*=\s*\{job = "([^"]+)"\}', alloy_config())
    assert job and target["expr"].startswith(f'{{job="{job.group(1)}"}}')


def test_the_explorer_links_a_saga_to_its_trace_in_grafana() -> None:
    url = gateway_settings().ui_trace_url
    assert url is not None and "{trace_id}" in url
    parts = urlsplit(url)
    grafana_host_port = {c: h for h, c in published(SERVICES["grafana"])}[3000]
    assert (parts.hostname, parts.port, parts.path) == ("localhost", grafana_host_port, "/explore")
    (panes,) = parse_qs(parts.query)["panes"]
    pane = next(iter(json.loads(panes.replace("{trace_id}", "T")).values()))
    assert pane["datasource"] == datasources()["tempo"]["uid"]
    assert pane["queries"][0]["query"] == "T"
