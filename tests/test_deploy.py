"""Static checks of deploy/: no Docker here, so the files are read, not run."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

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


class TestCompose:
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
        assert "--require-hashes -r requirements-dev.lock" in text


def test_docs_name_the_real_span_attributes() -> None:
    """docs/observability.md explains the attributes the engine really sets."""
    doc = (ROOT / "docs" / "observability.md").read_text()
    source = (ROOT / "engine" / "_tracing.py").read_text()
    for attribute in re.findall(r'"(saga\.[a-z_.]+)"', source):
        assert f"`{attribute}`" in doc, attribute
