"""docker-compose.yml without a Docker engine: it parses, its mounts exist, host ports do not
clash, and every ``loadshape`` command is a valid invocation of this project's CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
ENV_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def expand(value: str) -> str:
    """Compose-style ``${VAR:-default}`` with every VAR unset.

    >>> expand("${KEY_FILE:-./a/b}")
    './a/b'
    """
    return ENV_DEFAULT.sub(lambda m: m.group(2) or "", value)


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes", []):
        source, target = (vol["source"], vol["target"]) if isinstance(vol, dict) else (
            vol.split(":")[0], vol.split(":")[1])
        if source.startswith((".", "/")):
            out.append((expand(source), target))
    return out


def loadshape_commands() -> list[tuple[str, list[str]]]:
    return [(name, svc["command"]) for name, svc in SERVICES.items()
            if isinstance(svc.get("command"), list) and svc["command"][:1] == ["loadshape"]]


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_file_parses_and_has_the_whole_stack():
    expected = {"kafka", "topics", "worker", "alerts-forwarder", "simulator", "prometheus",
                "alertmanager", "grafana", "otel-collector"}
    assert expected <= set(SERVICES)
    assert SERVICES["kafka"]["image"] == "apache/kafka:3.9.1"
    for name, svc in SERVICES.items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_every_mounted_host_path_exists():
    for name, svc in SERVICES.items():
        for source, _target in bind_mounts(svc):
            assert (ROOT / source).exists(), f"service {name}: mounted {source} does not exist"
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / context / "Dockerfile").exists(), name
    for name, secret in COMPOSE.get("secrets", {}).items():
        assert (ROOT / expand(secret["file"])).exists(), f"secret {name}"


def test_host_ports_do_not_clash():
    seen: dict[str, str] = {}
    for name, svc in SERVICES.items():
        ports = svc.get("ports", [])
        if ports and svc.get("deploy", {}).get("replicas", 1) > 1:
            pytest.fail(f"{name}: a replicated service cannot publish fixed host ports")
        for spec in ports:
            host = str(spec).rsplit(":", 1)[0]
            assert host not in seen, f"host port {host}: {seen.get(host)} and {name}"
            seen[host] = name


@pytest.mark.parametrize("service,argv", loadshape_commands(),
                         ids=[name for name, _ in loadshape_commands()])
def test_loadshape_commands_are_valid_cli_invocations(service, argv):
    parser = build_parser()
    name = argv[1]
    assert name in subcommands(parser), (
        f"docker-compose service {service!r} runs `loadshape {name}`, but the subcommand "
        f"{name!r} is not implemented (no app/commands module registers it)")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"service {service!r}: `{' '.join(argv)}` is rejected by the CLI:\n"
                        f"{err.getvalue()}")


def test_the_stack_is_wired_consistently():
    settings = Settings()
    env = SERVICES["worker"]["environment"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    worker_port = SERVICES["worker"]["command"][SERVICES["worker"]["command"].index("--metrics-port") + 1]
    assert jobs["loadshape-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert str(jobs["loadshape-worker"]["dns_sd_configs"][0]["port"]) == worker_port
    fwd = SERVICES["alerts-forwarder"]["command"]
    fwd_target = jobs["loadshape-alerts-forwarder"]["static_configs"][0]["targets"][0]
    assert fwd_target == f"alerts-forwarder:{fwd[fwd.index('--metrics-port') + 1]}"
    # otel collector -> otlp_spans on the compose broker, OTLP protobuf
    otel = yaml.safe_load((ROOT / "deploy/otelcol/config.yaml").read_text())
    kafka_exp = otel["exporters"]["kafka"]
    assert kafka_exp["topic"] == settings.topic_otlp
    assert kafka_exp["encoding"] == "otlp_proto"
    assert kafka_exp["brokers"] == [env["LOADSHAPE_BOOTSTRAP_SERVERS"]]
    # Grafana: provisioning and dashboards mounted where the provider looks
    mounts = dict(bind_mounts(SERVICES["grafana"]))
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/loadshape.yml").read_text())
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    # Alertmanager's webhook points at a service of this file
    am = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    hook = am["receivers"][0]["webhook_configs"][0]["url"]
    host, port = re.match(r"http://([\w-]+):(\d+)/", hook).groups()
    assert host in SERVICES and str(SERVICES[host]["environment"]["HTTP_PORT"]) == port
