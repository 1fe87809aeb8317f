"""Property-based: schemathesis against the API's own OpenAPI schema, over real HTTP.

``sagas api`` runs as a process (as deployed) on the dev server and a SQLite store; for every
operation, generated requests (valid and invalid) must never get a server error, and every
response must match the schema: documented status code, content type and body. Bounded:
a fixed number of examples per operation, no deadline.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import schemathesis.specs.openapi.adapter  # compiled at collection: see below
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from tests.support.processes import Background, free_port

# schemathesis imports most of itself lazily, and pytest rewrites (compiles) a plugin's modules
# as they are imported. Compiling in the middle of the suite once met CPython 3.11's "AST
# constructor recursion depth mismatch": the garbage collector closed an abandoned workflow
# coroutine of an earlier test's worker mid-compile. Importing here, at collection, compiles
# them before any worker has run.

pytestmark = pytest.mark.temporal

SECRET = "s" * 32
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_url(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("schema")
    port = free_port()
    env = {
        **os.environ,
        "SAGAS_DATA_DIR": str(folder),
        "SAGAS_API_PORT": str(port),
        "SAGAS_API_KEYS": f"fuzz:{SECRET}",
        "SAGAS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SAGAS_TASK_QUEUE": f"schema-{uuid.uuid4()}",  # no worker: started sagas just wait
        "SAGAS_MODULES": "tests.support.sagas",
    }
    api = Background(["api"], env, folder / "api.log")
    try:
        api.wait_for("ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


def test_no_input_breaks_the_schema_or_the_server(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {SECRET}"
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        if op.path == "/sagas/{saga_id}/events":
            continue  # a stream that lasts as long as the saga; covered in test_api.py

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(session=session, checks=CHECKS)

        try:
            given(op.as_strategy())(run)()
        except Exception as exc:  # collect all operations' failures, then fail once
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # The run did reach the API, many times and on many routes.
    metrics = session.get(f"{api_url}/metrics", timeout=10).text
    served = [
        line for line in metrics.splitlines() if line.startswith("sagas_api_request_seconds_count")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in served) > 200
    assert len({line.split('route="')[1].split('"')[0] for line in served}) >= 10
