"""deploy/: compose file, Helm chart, Containerfile health check and systemd units, checked with the
tools this machine has (docker compose / docker-compose, helm, kubernetes-validate, systemd-analyze)
and otherwise by parsing them. Images cannot be pulled here, so nothing is started in containers."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (test extra)")

from helm_render import TemplateError, render_chart  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CHART = DEPLOY / "helm" / "dermnode"
SECRETS_ENV = {"DERMNODE_WORKER_TOKEN": "test-token", "DERMNODE_DB_PASSWORD": "test-password"}
CREDENTIALS = {"credentials": {"brokerUrl": "redis://redis:6379/0", "workerToken": "test-token",
                               "databaseUrl": "postgresql+psycopg://dermnode:pw@postgres/dermnode"}}


# ------------------------------------------------------------------------------------------ compose
def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _check_compose(config: dict) -> None:
    services = config["services"]
    assert {"node", "worker", "redis", "postgres", "orthanc"} <= set(services)
    node, worker, redis = services["node"], services["worker"], services["redis"]
    assert "http://localhost:8080/readyz" in " ".join(node["healthcheck"]["test"])
    assert any(str(v).split(":")[1].startswith("/var/lib/dermnode") for v in node["volumes"])
    assert _environment(node)["DERMNODE_DATABASE_URL"].startswith("postgresql+psycopg://")
    env = _environment(worker)
    assert env["DERMNODE_NODE_URL"] == "http://node:8080" and env["DERMNODE_BROKER_URL"].startswith("redis://redis:")
    assert env["DERMNODE_WORKER_TOKEN"]
    assert "DERMNODE_DATABASE_URL" not in env, "workers must not reach the database"
    assert not worker.get("volumes"), "workers share no home with the node"
    assert int(worker["deploy"]["replicas"]) >= 1
    waits_for = worker["depends_on"]["node"]["condition"] if isinstance(worker["depends_on"], dict) else "started"
    assert waits_for != "service_healthy", "the node is ready only once a worker answers: no deadlock"
    assert "--appendonly" in redis["command"] and "yes" in redis["command"] and redis["volumes"]
    assert services["postgres"]["volumes"] and services["postgres"]["healthcheck"]
    assert "demo-pacs" in services["orthanc"]["profiles"]
    declared = set(config.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            assert source in declared, f"{name} uses the undeclared volume {source}"


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, for checking the file without compose."""
    def value(match: re.Match) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        assert kind != "?", f"${{{name}}} is required and unset"
        return rest if kind == "-" else ""
    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", value, text)


def test_compose_file_has_the_stack_with_health_checks_and_stateless_workers() -> None:
    _check_compose(yaml.safe_load(_interpolate((DEPLOY / "compose.yaml").read_text(), SECRETS_ENV)))


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    pytest.skip("neither `docker compose` nor docker-compose is installed: the file is checked by parsing only")


def test_compose_config_accepts_the_file_and_requires_the_secrets() -> None:
    command = _compose_command() + ["-f", str(DEPLOY / "compose.yaml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    result = subprocess.run(command + ["config"], env=env | SECRETS_ENV, capture_output=True, text=True,
                            timeout=60, cwd=DEPLOY)
    assert result.returncode == 0, result.stderr
    _check_compose(yaml.safe_load(result.stdout))
    missing = subprocess.run(command + ["config"], env=env, capture_output=True, text=True, timeout=60, cwd=DEPLOY)
    assert missing.returncode != 0 and "DERMNODE_WORKER_TOKEN" in missing.stderr + missing.stdout


# ------------------------------------------------------------------------------------ health checks
class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status if self.path in ("/healthz", "/readyz") else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Health", (_Health,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _containerfile_healthcheck() -> list[str]:
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] in deploy/Containerfile"
    return json.loads(match.group(1))


def _health_checks(port: int) -> list[tuple[list[str], dict[str, str]]]:
    """The Containerfile's and compose's check commands, pointed at 127.0.0.1:port, run by this python."""
    image = _containerfile_healthcheck()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["node"]["healthcheck"]["test"][1:]
    compose = [word.replace("localhost:8080", f"127.0.0.1:{port}") for word in compose]
    assert image[0] == "python" and compose[0] == "python"
    env = dict(os.environ, DERMNODE_HTTP_PORT=str(port))
    return [([sys.executable, *image[1:]], env), ([sys.executable, *compose[1:]], env)]


def test_health_check_commands_pass_on_200_and_fail_otherwise(health_server: ThreadingHTTPServer) -> None:
    port = health_server.server_address[1]
    for command, env in _health_checks(port):
        assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0, command
    health_server.RequestHandlerClass.status = 503
    for command, env in _health_checks(port):
        assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0, command


# -------------------------------------------------------------------------------------------- helm
def _values_paths(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        if isinstance(value, dict):
            paths |= _values_paths(value, prefix + key + ".")
    return paths


def test_chart_metadata_and_every_values_reference_exists() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "dermnode" and chart["version"]
    known = _values_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    for template in (CHART / "templates").iterdir():
        for path in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()):
            assert path in known, f"{template.name}: .Values.{path} is not in values.yaml"


def _by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_chart_renders_the_node_workers_services_and_secrets() -> None:
    kinds = _by_kind(render_chart(CHART, CREDENTIALS))
    node, = kinds["StatefulSet"]
    worker, = kinds["Deployment"]
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    node_pod = node["spec"]["template"]
    assert node["spec"]["selector"]["matchLabels"].items() <= node_pod["metadata"]["labels"].items()
    assert node["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "home"
    container = _container(node)
    assert {"name": "home", "mountPath": "/var/lib/dermnode"} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"dicom": 11112, "http": 8080}
    for service in services.values():
        assert service["spec"]["selector"].items() <= node_pod["metadata"]["labels"].items()
        assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    assert node["spec"]["serviceName"] in services
    assert services[node["spec"]["serviceName"]]["spec"]["publishNotReadyAddresses"] is True

    env = {e["name"]: e for e in _container(worker)["env"]}
    assert "DERMNODE_DATABASE_URL" not in env, "workers must not reach the database"
    assert env["DERMNODE_NODE_URL"]["value"] == f"http://{node['spec']['serviceName']}:8080"
    assert "nvidia.com/gpu" not in _container(worker)["resources"]["limits"]
    assert all(v["name"] != "home" for v in worker["spec"]["template"]["spec"].get("volumes", []))

    secret, = kinds["Secret"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["worker-token"] == "test-token"
    assert env["DERMNODE_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_chart_gpu_tls_and_an_existing_secret() -> None:
    overrides = {"credentials": {"existingSecret": "hospital-dermnode"}, "worker": {"gpu": {"enabled": True, "count": 2}},
                 "tls": {"enabled": True, "certificate": "CERT", "privateKey": "KEY", "caCertificates": "CA"}}
    kinds = _by_kind(render_chart(CHART, overrides))
    worker, = kinds["Deployment"]
    assert _container(worker)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert [s["type"] for s in kinds["Secret"]] == ["kubernetes.io/tls"], "no credentials Secret with existingSecret"
    tls, = kinds["Secret"]
    assert base64.b64decode(tls["data"]["ca.crt"]) == b"CA"
    node = _container(kinds["StatefulSet"][0])
    env = {e["name"]: e for e in node["env"]}
    assert env["DERMNODE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "hospital-dermnode"
    assert env["DERMNODE_TLS_CA_CERTIFICATES"]["value"] == "/etc/dermnode/tls/ca.crt"
    assert any(m["name"] == "tls" for m in node["volumeMounts"])


def test_chart_refuses_to_render_without_credentials() -> None:
    with pytest.raises(TemplateError, match="credentials.brokerUrl is required"):
        render_chart(CHART, {})


@pytest.mark.parametrize("overrides", [CREDENTIALS, {**CREDENTIALS, "worker": {"gpu": {"enabled": True}},
                                                     "tls": {"enabled": True, "certificate": "C", "privateKey": "K"}}])
def test_rendered_objects_match_the_kubernetes_schemas(overrides: dict) -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (test extra)")
    for obj in render_chart(CHART, overrides):
        validator.validate(obj, validator.latest_version(), strict=True)


def test_helm_lint_and_template() -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm is not installed (no Debian, PyPI or npm package ships it): the chart is rendered by "
                    "tests/helm_render.py instead")
    sets = [f"--set=credentials.{k}={v}" for k, v in CREDENTIALS["credentials"].items()]
    lint = subprocess.run([helm, "lint", str(CHART), *sets], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = subprocess.run([helm, "template", "demo", str(CHART), *sets], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    assert _by_kind([d for d in yaml.safe_load_all(rendered.stdout) if d]).keys() == _by_kind(
        render_chart(CHART, CREDENTIALS)).keys()


# ----------------------------------------------------------------------------------------- systemd
def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    env_file = tmp_path / "worker.env"
    env_file.write_text("DERMNODE_BROKER_URL=redis://127.0.0.1:6379/0\n")
    units = []
    for unit in sorted(DEPLOY.glob("*.service")):
        # the units name the installed command; verify them against an executable that exists here
        text = unit.read_text().replace("/opt/dermnode/.venv/bin/dermnode", shutil.which("true") or "/bin/true")
        (tmp_path / unit.name).write_text(text.replace("/etc/dermnode/worker.env", str(env_file)))
        units.append(str(tmp_path / unit.name))
    assert len(units) == 2
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
