"""Which Temporal to reach, and how: address, namespace, TLS, mTLS and API key.

Read the way every Temporal tool reads it (``temporalio.envconfig``): a profile from the
TOML configuration file (``TEMPORAL_CONFIG_FILE``, default ``~/.config/temporalio/
temporal.toml``; ``TEMPORAL_PROFILE`` picks one), then the ``TEMPORAL_*`` variables
(``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*``).
The engine's own ``SAGAS_TEMPORAL_*`` settings override them, field by field, so a team can
keep one Temporal profile for its CLI and still point one process elsewhere.

An API key turns TLS on (Temporal Cloud); a CA, a client certificate or a server name do too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS
from temporalio.service import TLSConfig

from engine._errors import TemporalConfigError

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class TLSFiles:
    """TLS material as bytes, with where each part came from (for error messages)."""

    server_ca_cert: bytes | None = field(default=None, repr=False)
    client_cert: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def to_config(self) -> TLSConfig:
        return TLSConfig(
            server_root_ca_cert=self.server_ca_cert,
            domain=self.server_name,
            client_cert=self.client_cert,
            client_private_key=self.client_key,
        )


@dataclass(frozen=True)
class TemporalConnection:
    """Where and how a process connects to Temporal."""

    address: str = DEFAULT_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    api_key: str | None = field(default=None, repr=False)
    tls: TLSFiles | None = None  # None: plaintext
    rpc_metadata: Mapping[str, str] = field(default_factory=dict)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``temporalio.client.Client.connect`` (but the data converter)."""
        options: dict[str, Any] = {"namespace": self.namespace}
        options["tls"] = self.tls.to_config() if self.tls is not None else False
        if self.api_key:
            options["api_key"] = self.api_key
        if self.rpc_metadata:
            options["rpc_metadata"] = dict(self.rpc_metadata)
        return options

    def describe(self) -> str:
        """For start-up lines and errors: never the key or the certificates themselves."""
        how = []
        if self.tls is not None:
            how.append("mTLS" if self.tls.client_cert else "TLS")
        if self.api_key:
            how.append("API key")
        suffix = f", {' + '.join(how)}" if how else ""
        return f"{self.address} (namespace {self.namespace}{suffix})"


@dataclass(frozen=True)
class Overrides:
    """The engine's own settings (``SAGAS_TEMPORAL_*``); None leaves the profile's value."""

    address: str | None = None
    namespace: str | None = None
    api_key: str | None = field(default=None, repr=False)
    tls: bool | None = None
    server_ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None
    profile: str | None = None
    config_file: Path | None = None
    #: False: ignore Temporal's configuration (file and TEMPORAL_*), as for an embedded server.
    temporal_config: bool = True


def resolve(overrides: Overrides, env: Mapping[str, str] | None = None) -> TemporalConnection:
    """The connection from Temporal's configuration (file, ``TEMPORAL_*``), then ``overrides``.

    Raises ``TemporalConfigError`` naming the variable when something cannot be used.
    """
    profile = ClientConfigProfile()
    if overrides.temporal_config:
        environ = dict(os.environ if env is None else env)
        if overrides.profile:
            environ["TEMPORAL_PROFILE"] = overrides.profile
        if overrides.config_file:
            environ["TEMPORAL_CONFIG_FILE"] = str(overrides.config_file)
        try:
            profile = ClientConfigProfile.load(override_env_vars=environ)
        except Exception as exc:  # the SDK's bridge raises its own ConfigError type
            raise TemporalConfigError(f"Temporal client configuration: {exc}") from None
    api_key = overrides.api_key or profile.api_key
    tls = _tls(profile.tls, overrides, api_key=api_key)
    return TemporalConnection(
        address=overrides.address or profile.address or DEFAULT_ADDRESS,
        namespace=overrides.namespace or profile.namespace or DEFAULT_NAMESPACE,
        api_key=api_key,
        tls=tls,
        rpc_metadata=dict(profile.grpc_meta),
    )


def _tls(
    profile: ClientConfigTLS | None, overrides: Overrides, *, api_key: str | None
) -> TLSFiles | None:
    files = TLSFiles(
        server_ca_cert=_read(overrides.server_ca_cert, "SAGAS_TEMPORAL_TLS_CA_CERT")
        or _source(profile.server_root_ca_cert if profile else None, "TEMPORAL_TLS_SERVER_CA_CERT"),
        client_cert=_read(overrides.client_cert, "SAGAS_TEMPORAL_TLS_CLIENT_CERT")
        or _source(profile.client_cert if profile else None, "TEMPORAL_TLS_CLIENT_CERT"),
        client_key=_read(overrides.client_key, "SAGAS_TEMPORAL_TLS_CLIENT_KEY")
        or _source(profile.client_private_key if profile else None, "TEMPORAL_TLS_CLIENT_KEY"),
        server_name=overrides.server_name or (profile.server_name if profile else None),
    )
    if bool(files.client_cert) != bool(files.client_key):
        raise TemporalConfigError(
            "mTLS needs both a client certificate and its key "
            "(SAGAS_TEMPORAL_TLS_CLIENT_CERT and SAGAS_TEMPORAL_TLS_CLIENT_KEY, or "
            "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH)"
        )
    ours = any(
        (
            overrides.server_ca_cert,
            overrides.client_cert,
            overrides.client_key,
            overrides.server_name,
        )
    )
    asked = overrides.tls
    if asked is None and ours:
        asked = True  # our own TLS settings override Temporal's, TEMPORAL_TLS=false included
    if asked is None and profile is not None and profile.disabled is not None:
        asked = not profile.disabled
    if asked is False:
        return None
    material = any((files.server_ca_cert, files.client_cert, files.server_name))
    if asked or material or api_key:
        return files
    return None


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from None


def _source(source: Path | str | bytes | None, variable: str) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, Path):
        return _read(source, f"{variable}_PATH")
    return source.encode() if isinstance(source, str) else source


def explain_failure(message: str, connection: TemporalConnection) -> str:
    """A connect error from the SDK's transport as one line a person can act on."""
    where = connection.describe()
    if "UnknownIssuer" in message or "invalid peer certificate" in message:
        return (
            f"cannot reach Temporal at {where}: its TLS certificate is not signed by the "
            "configured CA (SAGAS_TEMPORAL_TLS_CA_CERT or TEMPORAL_TLS_SERVER_CA_CERT_PATH)"
        )
    if "NotValidForName" in message:
        return (
            f"cannot reach Temporal at {where}: its TLS certificate is for another host name "
            "(set SAGAS_TEMPORAL_TLS_SERVER_NAME or TEMPORAL_TLS_SERVER_NAME)"
        )
    if "close_notify" in message or "CertificateRequired" in message:
        return (
            f"cannot reach Temporal at {where}: the server closed the TLS connection (does it "
            "require a client certificate? set SAGAS_TEMPORAL_TLS_CLIENT_CERT and _KEY)"
        )
    if "Connection refused" in message:
        return f"cannot reach Temporal at {where} (connection refused)"
    if connection.tls is None and ("BrokenPipe" in message or "transport error" in message):
        return (
            f"cannot reach Temporal at {where}: the connection broke (does the server "
            "expect TLS? set SAGAS_TEMPORAL_TLS=true)"
        )
    return f"cannot reach Temporal at {where} ({message[:200]})"
