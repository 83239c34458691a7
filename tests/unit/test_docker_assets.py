"""The container assets, checked without a Docker engine: the compose file is valid Compose and refers to files
that exist, the Dockerfile builds a small non-root image with a working health check, and the Grafana dashboard
and Prometheus configuration use only metrics the service exposes."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from consumer.config import parse_config
from consumer.health import OpsServer
from consumer.metrics import Metrics
from consumer.templates import compile_providers

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "sms-consumer.json"
OPS_PORT = 9400


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def service_config() -> Any:
    raw = yaml.safe_load((DOCKER / "config" / "config.yaml").read_text())
    return parse_config(raw, "docker/config/config.yaml", env={"DEMO_PROVIDER_API_KEY": "k"})


# --------------------------------------------------------------------------- compose


def test_compose_file_validates_against_the_compose_specification_schema():
    pytest.importorskip("check_jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    return [standalone] if standalone else None


def test_docker_compose_accepts_the_file_when_it_is_installed():
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "tools", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "sms-consumer-check"},
    )
    # Judged by the output, not only the exit code: some wrappers of the binary always exit 0.
    assert result.returncode == 0 and result.stdout.strip().startswith("{"), result.stderr
    resolved = json.loads(result.stdout)
    assert set(resolved["services"]) == set(compose()["services"])


def test_compose_runs_kafka_in_kraft_mode_and_wires_the_services_together():
    services = compose()["services"]
    assert {"kafka", "topics", "consumer", "demo-provider", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1" and services["topics"]["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"] and not any("ZOOKEEPER" in key for key in env)
    for name, service in services.items():
        for target in service.get("depends_on", []):
            assert target in services, f"{name} depends on unknown service {target}"
    # The consumer and the demo provider run the image built from the Dockerfile.
    for name in ("consumer", "demo-provider"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["demo-provider"]["command"][:5] == ["demo-provider", "--host", "0.0.0.0", "--port", "8080"]
    assert f"{OPS_PORT}:{OPS_PORT}" in services["consumer"]["ports"]


def test_every_file_the_compose_file_mounts_exists():
    services = compose()["services"]
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which does not exist"
                mounts += 1
    assert mounts >= 4


def test_the_topic_service_creates_the_topics_the_consumer_uses():
    script = compose()["services"]["topics"]["command"][0]
    created = dict(re.findall(r"([\w.-]+):(\d+)", script.split(" in ", 1)[1].split(";", 1)[0]))
    kafka = service_config().kafka
    assert {kafka.input_topic, kafka.status_topic, kafka.dlq_topic} <= set(created)
    assert "kafka:19092" in script


def test_the_mounted_service_configuration_is_valid_and_points_at_the_compose_services():
    services = compose()["services"]
    consumer = services["consumer"]
    target = next(v.split(":")[1] for v in consumer["volumes"] if v.startswith("./config/config.yaml:"))
    assert target == json.loads(dockerfile_instructions()["CMD"][-1][1])[-1]
    assert "DEMO_PROVIDER_API_KEY" in consumer["environment"]
    config = service_config()
    providers = compile_providers(config.providers)
    assert set(providers) == {"demo-batch", "demo-single"}
    for provider in config.providers.values():
        url = urlsplit(provider.url)
        assert url.hostname in services and url.port == 8080
    host, port = config.kafka.bootstrap_servers.split(":")
    assert (
        host in services
        and f"INTERNAL://{host}:{port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert config.observability.http_port == OPS_PORT and config.observability.http_host == "0.0.0.0"


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> dict[str, list[tuple[int, str]]]:
    """Instructions by keyword, each as (stage index, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[tuple[int, str]]] = {}
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.setdefault(keyword, []).append((stage, args.strip()))
    return out


def test_dockerfile_is_multi_stage_on_python_311_slim():
    found = dockerfile_instructions()
    assert "PYTHON_IMAGE=python:3.11-slim" in [a for _, a in found["ARG"]]
    stages = [a for _, a in found["FROM"]]
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    final = len(stages) - 1
    assert any(s == final and a.startswith("--from=build ") for s, a in found["COPY"])


def test_final_stage_runs_as_a_non_root_user_without_build_tools():
    found = dockerfile_instructions()
    final = len(found["FROM"]) - 1
    users = [a for s, a in found["USER"] if s == final]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(a for s, a in found.get("RUN", []) if s == final)
    assert not re.search(r"\b(apt-get|apk|pip|gcc|make|build-essential)\b", runs)


def test_health_check_entrypoint_and_default_command():
    found = dockerfile_instructions()
    final = len(found["FROM"]) - 1
    (stage, check), *_ = found["HEALTHCHECK"]
    assert stage == final and "/healthz" in check and str(OPS_PORT) in check and "urllib" in check
    assert json.loads(found["ENTRYPOINT"][-1][1]) == ["sms-consumer"]
    assert json.loads(found["CMD"][-1][1]) == ["run", "/etc/sms-consumer/config.yaml"]


def health_command() -> list[str]:
    check = dockerfile_instructions()["HEALTHCHECK"][0][1]
    command: list[str] = json.loads(check[check.index("CMD ") + 4 :])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def test_the_health_check_command_passes_on_a_live_service_and_fails_without_one():
    def ok() -> tuple[bool, dict[str, Any]]:
        return True, {}

    server = OpsServer(Metrics(), ok, ok, "127.0.0.1", 0)
    await server.start()
    try:
        env = {**os.environ, "SMS_OBSERVABILITY_HTTP_PORT": str(server.port)}
        proc = await asyncio.create_subprocess_exec(*health_command(), env=env, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await server.stop()
    proc = await asyncio.create_subprocess_exec(*health_command(), env=env, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 30) != 0


def dockerignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def test_everything_the_dockerfile_copies_exists_and_is_not_docker_ignored():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "negated patterns are not handled by this check"
    copied = []
    for _, args in dockerfile_instructions()["COPY"]:
        if args.startswith("--from="):
            continue
        *sources, _ = args.split()
        copied += sources
    assert {"pyproject.toml", "README.md", "consumer", "schemas"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    for heavy in (".git", ".venv", "tests", "consumer/__pycache__/x.pyc"):
        assert dockerignored(heavy, patterns), f"{heavy} would be sent to the build"


# --------------------------------------------------------------------------- Prometheus and Grafana


def exposed_metric_names() -> set[str]:
    """Sample names of a live `Metrics().render()`, every labelled metric touched once."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        labels = getattr(metric, "labelnames", ())
        if labels:
            metric.labels(*("x" for _ in labels))
    families = text_string_to_metric_families(metrics.render().decode())
    return {sample.name for family in families for sample in family.samples}


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, keywords, labels and durations left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group(0) in _PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def test_metric_name_extraction_reads_only_metric_names():
    expr = 'histogram_quantile(0.99, sum by (le, provider) (rate(a_bucket{status!="x"}[$__rate_interval]))) / b'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("count(c == 1) or vector(0)") == {"c"}


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def test_every_metric_on_the_dashboard_is_one_the_service_exposes():
    exposed = exposed_metric_names()
    queries = dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        unknown = names - exposed
        assert not unknown, f"panel {title!r} uses {sorted(unknown)}, which /metrics does not expose"


def test_the_dashboard_covers_throughput_latency_batching_lag_breakers_and_backpressure():
    used = set().union(*(metric_names(e) for _, e in dashboard_queries()))
    assert {
        "sms_statuses_total",
        "sms_http_request_duration_seconds_bucket",
        "sms_batch_size_bucket",
        "sms_consumer_lag",
        "sms_breaker_state",
        "sms_in_flight_messages",
        "sms_buffered_messages",
        "sms_event_loop_lag_seconds",
    } <= used
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Throughput by status", "HTTP latency p50 / p99", "Statuses by provider", "Circuit breaker state"} <= titles


def test_prometheus_scrapes_the_consumer_ops_port():
    doc = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    job = jobs["sms-consumer"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"consumer:{OPS_PORT}"]
    assert "consumer" in compose()["services"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard_folder():
    services = compose()["services"]
    provisioning = DOCKER / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    (source,) = sources
    url = urlsplit(source["url"])
    assert source["type"] == "prometheus" and url.hostname in services and url.port == 9090
    uids = {
        target["datasource"]["uid"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {source["uid"]}
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "sms-consumer.yml").read_text())["providers"]
    mounted = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert mounted["./grafana/dashboards"] == provider["options"]["path"]
    assert mounted["./grafana/provisioning"] == "/etc/grafana/provisioning"
