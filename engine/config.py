"""Settings for every process, from ``SAGAS_*`` environment variables (or a ``.env`` file).

One class for the API, the worker, the participants and the CLI (docs/configuration.md lists
every field). With ``SAGAS_ENVIRONMENT=production`` the unsafe defaults are refused: the
settings do not load without an encryption key or with SQLite as the store, and the API does
not start without API keys (workers and the CLI need none).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from temporalio.converter import DataConverter

from engine._codec import data_converter, parse_keys
from engine._connection import Overrides, TemporalConnection, resolve
from engine._secrets import weak_api_keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGAS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # A settings error must not print what it was given: keys and passwords among it.
        hide_input_in_errors=True,
    )

    #: "production" makes unsafe values an error (the API refuses to start without keys).
    environment: Literal["development", "production"] = "development"
    # auto: JSON in production or when stderr is not a terminal, readable lines otherwise.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Which Temporal: Temporal's own configuration (a profile in its TOML file, TEMPORAL_*
    # variables) unless these say otherwise (see temporal_connection and engine._connection).
    temporal_address: str = Field(default="localhost:7233", description="Temporal frontend")
    namespace: str = "default"
    #: Temporal Cloud API key (turns TLS on).
    temporal_api_key: SecretStr | None = None
    #: TLS to Temporal: on, off, or (unset) on when a CA, client certificate or key is given.
    temporal_tls: bool | None = None
    temporal_tls_ca_cert: Path | None = None
    #: mTLS: the client certificate and its key (PEM files).
    temporal_tls_client_cert: Path | None = None
    temporal_tls_client_key: Path | None = None
    temporal_tls_server_name: str | None = None
    #: A profile of Temporal's configuration file, and that file (else TEMPORAL_PROFILE,
    #: TEMPORAL_CONFIG_FILE, or ~/.config/temporalio/temporal.toml).
    temporal_profile: str | None = None
    temporal_config_file: Path | None = None
    #: Read Temporal's own configuration (its TOML profile and TEMPORAL_* variables);
    #: ``sagas dev`` turns it off for its embedded server.
    temporal_use_env_config: bool = True

    @field_validator(
        "temporal_tls_ca_cert",
        "temporal_tls_client_cert",
        "temporal_tls_client_key",
        "temporal_config_file",
        "temporal_tls_server_name",
        "temporal_profile",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose's ${VAR:-} gives an empty string: the same as not setting it.
        return None if isinstance(value, str) and not value.strip() else value

    task_queue: str = "sagas"
    #: Modules (or packages) whose saga definitions the worker and CLI load.
    modules: Annotated[list[str], NoDecode] = ["workflows"]
    #: Where the embedded Temporal server keeps its SQLite file.
    data_dir: Path = Path(".sagas")
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    # Where `sagas server` / `sagas dev` listen; 0.0.0.0 in a container.
    temporal_host: str = "127.0.0.1"
    max_concurrent_activities: int = Field(default=100, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)
    # How many polls for workflow tasks a worker keeps open: "auto" lets the server's feedback
    # scale them (Temporal's recommended setting; the scaling needs server 1.28 or later), a
    # number is a fixed maximum. A saga of local steps does all its work in its first
    # workflow task, which is polled from the task queue itself: Temporal's fixed default
    # leaves one poll there (four go to the worker's sticky queue), and a few polls there cap
    # such sagas (docs/benchmarks.md).
    workflow_task_pollers: Literal["auto"] | int = "auto"
    # The same for activity tasks (regular steps); Temporal's default is a fixed 5.
    activity_task_pollers: Literal["auto"] | int = 5

    @field_validator("workflow_task_pollers", "activity_task_pollers", mode="before")
    @classmethod
    def _auto_or_a_number(cls, value: object, info: ValidationInfo) -> object:
        # Checked here, so that an error names the setting once (not once per kind of union).
        least = 2 if info.field_name == "workflow_task_pollers" else 1  # Temporal's minimums
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if not re.fullmatch(r"[0-9]{1,4}", text) or not least <= int(text) <= 1000:
            # Not the input: settings errors never repeat what they were given.
            raise ValueError(f"'auto' or a number of polls from {least} to 1000")
        return int(text)

    # Workflows kept in memory between tasks; 0 replays the history for every task (slow, but
    # the strictest test of determinism and of telemetry that must not repeat on replay).
    max_cached_workflows: int = Field(default=1000, ge=0)
    # Prometheus metrics of a worker (SDK and saga metrics) at http://host:port/metrics; unset,
    # none are served (the API's /metrics has them when both run in one process).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # The Temporal SDK's own metrics served beside the saga metrics: "essential" (backlogs,
    # failures, slots, cache) or "all" (also a latency histogram per request and per task,
    # which costs a busy worker about a tenth of its CPU).
    sdk_metrics: Literal["essential", "all"] = "essential"
    # On SIGTERM a worker stops polling and gives running activities this long to finish
    # before cancelling them (Kubernetes: keep terminationGracePeriodSeconds above it).
    worker_shutdown_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Outages (engine._participants): per participant, in each worker, a circuit breaker that
    # opens after this many consecutive transient failures for this long, and a bulkhead of
    # this many concurrent calls (unset: this share of max_concurrent_activities); a call
    # refused by a full bulkhead is retried after bulkhead_retry_seconds.
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1000)
    circuit_cooldown_seconds: float = Field(default=10.0, gt=0, le=3600)
    bulkhead_max_concurrent: int | None = Field(default=None, ge=1)
    bulkhead_share: float = Field(default=0.5, gt=0, le=1)
    bulkhead_retry_seconds: float = Field(default=1.0, gt=0, le=600)
    #: Run sagas in Temporal's workflow sandbox (guards saga definitions against I/O, clocks
    #: and randomness in ``when``/``input`` callables); off saves CPU per saga.
    workflow_sandbox: bool = True
    #: A saga continues as new (one saga, a fresh Temporal history) when Temporal suggests it
    #: or once its history has this many events; unset, when Temporal suggests it only. Read
    #: by whoever starts sagas (the API, the CLI): each saga keeps the limit it started with.
    history_events_limit: int | None = Field(default=None, ge=100, le=50_000)

    # The saga store (sqlmodel; schema by Alembic).
    #: SQLAlchemy URL; default: SQLite file ``sagas.sqlite`` under ``data_dir``.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGAS_DATABASE_URL", "DATABASE_URL")
    )
    #: Workers keep the store in step with the sagas they run.
    store_enabled: bool = True

    # The REST API (api/).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    #: Bearer API keys, comma-separated; ``name:key`` names the caller in operator actions.
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    #: Roles of named keys, ``name:role+role`` comma-separated (read, start, operate,
    #: approve); a key not listed keeps every role.
    api_key_roles: Annotated[list[str], NoDecode] = []
    #: Four eyes: the key that started a saga may not approve or reject it.
    api_four_eyes: bool = False
    #: Host headers the API answers; empty: localhost names in development, any in production.
    api_allowed_hosts: Annotated[list[str], NoDecode] = []
    #: /docs and /openapi.json: auto (open in development, behind a key in production),
    #: open, key, or off.
    api_docs: Literal["auto", "open", "key", "off"] = "auto"
    #: Deadline of each call the API makes to Temporal (503/504 past it).
    api_temporal_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: How long an operator action waits for a worker to run it (504 past it).
    api_action_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: Saga inputs larger than this (as compact JSON) are refused (413), unless the saga
    #: type sets its own ``max_input_bytes``.
    max_input_bytes: int = Field(default=32 * 1024, ge=256, le=2 * 1024 * 1024)
    #: Request bodies above this size are refused (413) before they are read further.
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    #: Links in the saga resource.
    jaeger_url: str = "http://localhost:16686"
    temporal_ui_url: str = "http://localhost:8233"
    #: Browser origins allowed to call the API's codec server (/codec) and the API: the
    #: Temporal UI's; empty means SAGAS_TEMPORAL_UI_URL.
    codec_cors_origins: Annotated[list[str], NoDecode] = []
    #: The codec server's own body limit: the UI posts whole payloads (Temporal allows 2 MB).
    codec_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Server-sent events: how often the saga is looked at, and how long one stream may last.
    events_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    events_max_seconds: float = Field(default=3600, gt=0)
    #: Server-sent event streams open at once, in all and per API key (429 past them).
    events_max_streams: int = Field(default=200, ge=1)
    events_max_streams_per_key: int = Field(default=20, ge=1)
    #: The longest ``Prefer: wait=N`` / ``?wait=N`` may hold a request (a larger N is cut).
    api_wait_max_seconds: float = Field(default=30.0, ge=0, le=600)

    # Demo participants (participants/) and the activities that call them (activities/).
    participants_url: str = "http://127.0.0.1:8001"
    participants_host: str = "127.0.0.1"
    participants_port: int = Field(default=8001, ge=1, le=65535)
    #: SQLAlchemy URL with a ``{name}`` placeholder, one database per participant;
    #: default: a SQLite file per participant under ``data_dir``.
    participants_database_url: str | None = None
    #: Chaos runs: share of calls answered 503 before doing anything, extra latency, seed.
    participants_fault_rate: float = Field(default=0.0, ge=0.0, le=0.5)
    participants_latency_ms: int = Field(default=0, ge=0, le=5000)
    participants_seed: int = 0
    #: How long the hotel "slow" answers (DESIGN.md: 20 s).
    participants_slow_seconds: float = Field(default=20.0, ge=0.0, le=300.0)
    #: Trips whose total is above this amount wait for approval before the payment.
    trip_approval_above: int = Field(default=2000, ge=0)

    #: AES-256 keys (base64 of 32 bytes), comma-separated, newest first: every payload the
    #: engine gives Temporal (inputs, results, saga state) is encrypted with the first.
    encryption_key: SecretStr | None = None

    @field_validator("encryption_key")
    @classmethod
    def _well_formed_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # unset and empty (compose's ${VAR:-}) mean the same
        parse_keys(value.get_secret_value())  # says which key is wrong, and how
        return value

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        # What every engine process needs in production. API keys only the API needs: it
        # refuses to start without them (api.main); a worker or the CLI is never asked for them.
        if self.environment != "production":
            return self
        unsafe = []
        if self.encryption_key is None:
            unsafe.append(
                "SAGAS_ENCRYPTION_KEY is not set (inputs, card tokens included, would be "
                "stored in Temporal in clear)"
            )
        if not self.database_url or self.database_url.startswith("sqlite"):
            unsafe.append(
                "the saga store is SQLite (set SAGAS_DATABASE_URL or DATABASE_URL to PostgreSQL)"
            )
        unsafe.extend(f"SAGAS_API_KEYS: {why}" for why in weak_api_keys(self.api_keys))
        if unsafe:
            raise ValueError("unsafe for production: " + "; ".join(unsafe))
        return self

    @field_validator(
        "modules",
        "api_keys",
        "api_key_roles",
        "api_allowed_hosts",
        "codec_cors_origins",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    def cors_origins(self) -> list[str]:
        """The origins a browser may call the API from: the Temporal UI's, by default."""
        return self.codec_cors_origins or [self.temporal_ui_url.rstrip("/")]

    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'sagas.sqlite'}"

    def temporal_connection(self) -> TemporalConnection:
        """Where and how to reach Temporal: its configuration, then these settings."""
        given = self.model_fields_set
        key = self.temporal_api_key.get_secret_value() if self.temporal_api_key else None
        return resolve(
            Overrides(
                # The defaults count only when Temporal's configuration names nothing else.
                address=self.temporal_address if "temporal_address" in given else None,
                namespace=self.namespace if "namespace" in given else None,
                api_key=key or None,
                tls=self.temporal_tls,
                server_ca_cert=self.temporal_tls_ca_cert,
                client_cert=self.temporal_tls_client_cert,
                client_key=self.temporal_tls_client_key,
                server_name=self.temporal_tls_server_name,
                profile=self.temporal_profile,
                config_file=self.temporal_config_file,
                temporal_config=self.temporal_use_env_config,
            )
        )

    def data_converter(self) -> DataConverter:
        """The converter for every client and replayer: sealed with ``encryption_key``, if set."""
        keys = self.encryption_key.get_secret_value() if self.encryption_key is not None else ""
        return data_converter(parse_keys(keys))


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_problems(exc: ValidationError) -> str:
    """A settings error in one line, each problem naming its environment variable."""
    problems = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in error["loc"])
        problems.append(f"SAGAS_{field.upper()}: {message}" if field else message)
    return "; ".join(problems)
