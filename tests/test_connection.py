"""Connecting to the user's own Temporal: Temporal's configuration, our overrides, TLS, mTLS.

The resolution rules are tested on their own; then a worker and the API run a saga through a
real TLS (and an mTLS) endpoint in front of the dev server, with certificates from a CA the
test makes, and a wrong CA is one clear error line.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from engine._connection import DEFAULT_ADDRESS, Overrides, resolve
from engine._errors import TemporalConfigError
from engine.config import Settings
from tests.support.processes import Background, free_port, sagas
from tests.support.tls import CertificateAuthority, Pem, TLSFront

NO_FILE = {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


class TestResolution:
    """Temporal's own configuration first, then SAGAS_TEMPORAL_* field by field."""

    def test_nothing_configured_is_the_local_dev_server_in_plaintext(self) -> None:
        connection = resolve(Overrides(), NO_FILE)
        assert (connection.address, connection.namespace) == (DEFAULT_ADDRESS, "default")
        assert connection.tls is None
        assert connection.client_options()["tls"] is False

    def test_temporal_variables_are_read_and_an_api_key_turns_tls_on(self) -> None:
        env = {**NO_FILE, "TEMPORAL_ADDRESS": "acme.a1b2.tmprl.cloud:7233",
               "TEMPORAL_NAMESPACE": "acme.a1b2", "TEMPORAL_API_KEY": "secret-key"}  # fmt: skip
        connection = resolve(Overrides(), env)
        assert connection.address == "acme.a1b2.tmprl.cloud:7233"
        assert connection.namespace == "acme.a1b2"
        assert connection.client_options()["api_key"] == "secret-key"
        assert connection.tls is not None
        assert "secret-key" not in repr(connection)
        assert (
            connection.describe()
            == "acme.a1b2.tmprl.cloud:7233 (namespace acme.a1b2, TLS + API key)"
        )

    def test_our_settings_override_field_by_field(self) -> None:
        env = {**NO_FILE, "TEMPORAL_ADDRESS": "from-temporal:7233", "TEMPORAL_NAMESPACE": "ns1"}
        connection = resolve(Overrides(address="ours:7233"), env)
        assert (connection.address, connection.namespace) == ("ours:7233", "ns1")

    def test_a_profile_from_the_configuration_file(self, tmp_path: Path) -> None:
        config = tmp_path / "temporal.toml"
        config.write_text(
            '[profile.prod]\naddress = "prod:7233"\nnamespace = "prod"\napi_key = "k"\n'
        )
        env = {"TEMPORAL_CONFIG_FILE": str(config)}
        connection = resolve(Overrides(profile="prod"), env)
        assert (connection.address, connection.namespace) == ("prod:7233", "prod")
        with pytest.raises(TemporalConfigError, match="Profile 'staging' not found"):
            resolve(Overrides(profile="staging"), env)

    def test_tls_files_and_mtls(self, ca: CertificateAuthority) -> None:
        client = ca.issue("client-a", server=False)
        overrides = Overrides(
            server_ca_cert=ca.pem.cert, client_cert=client.cert, client_key=client.key
        )
        connection = resolve(overrides, NO_FILE)
        assert connection.tls is not None
        assert connection.tls.server_ca_cert == ca.pem.cert.read_bytes()
        assert connection.tls.client_key == client.key.read_bytes()
        assert "mTLS" in connection.describe()

    def test_tls_can_be_switched_off_explicitly(self, ca: CertificateAuthority) -> None:
        connection = resolve(Overrides(tls=False, server_ca_cert=ca.pem.cert), NO_FILE)
        assert connection.tls is None

    def test_our_tls_settings_beat_temporal_tls_false(self, ca: CertificateAuthority) -> None:
        env = {**NO_FILE, "TEMPORAL_TLS": "false"}
        assert resolve(Overrides(), env).tls is None
        assert resolve(Overrides(server_ca_cert=ca.pem.cert), env).tls is not None

    def test_an_embedded_server_ignores_temporal_configuration(self) -> None:
        """`sagas dev` must not send the shell's Temporal Cloud key to a plaintext server."""
        env = {**NO_FILE, "TEMPORAL_API_KEY": "cloud-key", "TEMPORAL_TLS": "true",
               "TEMPORAL_NAMESPACE": "prod", "TEMPORAL_GRPC_META_X_TEAM": "payments"}  # fmt: skip
        local = resolve(Overrides(address="127.0.0.1:7233", temporal_config=False), env)
        assert (local.api_key, local.tls, local.namespace) == (None, None, "default")
        assert local.rpc_metadata == {}

    def test_no_key_material_in_repr(self, ca: CertificateAuthority) -> None:
        client = ca.issue("client-r", server=False)
        overrides = Overrides(client_cert=client.cert, client_key=client.key, api_key="sekret")
        text = repr(resolve(overrides, NO_FILE))
        assert "PRIVATE KEY" not in text
        assert "CERTIFICATE" not in text
        assert "sekret" not in text

    def test_empty_settings_count_as_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SAGAS_TEMPORAL_TLS_CA_CERT", "")  # compose's ${VAR:-}
        assert Settings(_env_file=None).temporal_tls_ca_cert is None

    def test_a_client_certificate_without_its_key_is_refused(
        self, ca: CertificateAuthority
    ) -> None:
        client = ca.issue("client-b", server=False)
        with pytest.raises(TemporalConfigError, match="both a client certificate and its key"):
            resolve(Overrides(client_cert=client.cert), NO_FILE)

    def test_a_missing_file_is_named_with_its_variable(self, tmp_path: Path) -> None:
        with pytest.raises(TemporalConfigError, match="SAGAS_TEMPORAL_TLS_CA_CERT: cannot read"):
            resolve(Overrides(server_ca_cert=tmp_path / "nope.pem"), NO_FILE)

    def test_settings_defaults_do_not_hide_temporal_variables(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", NO_FILE["TEMPORAL_CONFIG_FILE"])
        monkeypatch.setenv("TEMPORAL_ADDRESS", "from-temporal:7233")
        monkeypatch.delenv("SAGAS_TEMPORAL_ADDRESS", raising=False)
        assert Settings(_env_file=None).temporal_connection().address == "from-temporal:7233"
        monkeypatch.setenv("SAGAS_TEMPORAL_ADDRESS", "ours:7233")
        assert Settings(_env_file=None).temporal_connection().address == "ours:7233"


def base_env(tmp_path: Path, task_queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SAGAS_"))}
    return {
        **env,
        **NO_FILE,
        "SAGAS_DATA_DIR": str(tmp_path / "data"),
        "SAGAS_DATABASE_URL": f"sqlite:///{tmp_path / 'sagas.sqlite'}",
        "SAGAS_TASK_QUEUE": task_queue,
        "SAGAS_MODULES": "examples",
    }


@pytest.fixture
def front(
    request: pytest.FixtureRequest, dev_env: WorkflowEnvironment, ca: CertificateAuthority
) -> Iterator[tuple[TLSFront, Pem | None]]:
    """A TLS endpoint before the dev server; with ``mtls``, one that demands a client cert."""
    mtls = request.param == "mtls"
    server = ca.issue(f"server-{uuid.uuid4().hex[:6]}", server=True)
    upstream = dev_env.client.service_client.config.target_host
    client = ca.issue(f"client-{uuid.uuid4().hex[:6]}", server=False) if mtls else None
    with TLSFront(upstream, server, client_ca=ca.pem.cert if mtls else None).running() as tls:
        yield tls, client


@pytest.mark.temporal
@pytest.mark.parametrize("front", ["tls", "mtls"], indirect=True)
async def test_a_worker_and_the_api_run_a_saga_through_tls(
    front: tuple[TLSFront, Pem | None], ca: CertificateAuthority, tmp_path: Path
) -> None:
    tls, client = front
    env = base_env(tmp_path, f"tls-{uuid.uuid4()}")
    # The worker is configured the way Temporal's own tools are: TEMPORAL_* variables.
    worker_env = {**env, "TEMPORAL_ADDRESS": tls.address,
                  "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(ca.pem.cert)}  # fmt: skip
    # The API with the engine's own settings.
    api_port = free_port()
    api_env = {**env, "SAGAS_TEMPORAL_ADDRESS": tls.address, "SAGAS_API_PORT": str(api_port),
               "SAGAS_TEMPORAL_TLS_CA_CERT": str(ca.pem.cert)}  # fmt: skip
    if client is not None:
        worker_env |= {"TEMPORAL_TLS_CLIENT_CERT_PATH": str(client.cert),
                       "TEMPORAL_TLS_CLIENT_KEY_PATH": str(client.key)}  # fmt: skip
        api_env |= {"SAGAS_TEMPORAL_TLS_CLIENT_CERT": str(client.cert),
                    "SAGAS_TEMPORAL_TLS_CLIENT_KEY": str(client.key)}  # fmt: skip
    worker = Background(["worker"], worker_env, tmp_path / "worker.log")
    api = Background(["api"], api_env, tmp_path / "api.log")
    try:
        worker.wait_for("ready")
        assert ("mTLS" if client else "TLS") in worker.log.read_text()
        api.wait_for("ready")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
            transfer = {"from_account": "a", "to_account": "b", "amount": 5}
            started = await http.post("/sagas/money_transfer", json=transfer)
            assert started.status_code == 202, started.text
            saga_id = started.json()["id"]
            async with asyncio.timeout(30):
                while (saga := (await http.get(f"/sagas/{saga_id}")).json())["status"] != (
                    "completed"
                ):
                    await asyncio.sleep(0.2)
        assert [s["status"] for s in saga["steps"]] == ["succeeded"] * len(saga["steps"])
    finally:
        api.stop()
        worker.stop()


@pytest.mark.temporal
@pytest.mark.parametrize("front", ["tls"], indirect=True)
def test_a_wrong_ca_is_one_clear_error_line(
    front: tuple[TLSFront, Pem | None], tmp_path: Path
) -> None:
    tls, _ = front
    other = CertificateAuthority(tmp_path / "other", name="another CA")
    env = {**base_env(tmp_path, "wrong-ca"), "SAGAS_TEMPORAL_ADDRESS": tls.address,
           "SAGAS_TEMPORAL_TLS_CA_CERT": str(other.pem.cert)}  # fmt: skip
    result = sagas("list", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not signed by the configured CA" in lines[0]
    assert tls.address in lines[0]
