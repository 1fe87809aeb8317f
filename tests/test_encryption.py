"""Payload encryption: what Temporal stores is sealed; sagas run as before; keys rotate."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.testing import WorkflowEnvironment

from engine import SagaClient, SagaStatus, StepStatus
from engine._codec import ENCODING, EncryptionCodec
from engine._errors import EncryptionKeyError
from engine._failure_converter import FailureConverter
from engine.config import Settings
from engine.worker import build_worker
from tests.support import ledger
from tests.support.sagas import ALL


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class TestCodec:
    async def test_a_sealed_payload_opens_to_the_same_payload(self) -> None:
        codec = EncryptionCodec([base64.b64decode(new_key())])
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"card_token":"tok_visa"}')
        (sealed,) = await codec.encode([plain])
        assert sealed.metadata["encoding"] == ENCODING
        assert b"tok_visa" not in sealed.SerializeToString()
        assert await codec.decode([sealed]) == [plain]

    async def test_payloads_from_before_encryption_pass_through(self) -> None:
        codec = EncryptionCodec([base64.b64decode(new_key())])
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b"{}")
        assert await codec.decode([plain]) == [plain]

    async def test_a_rotated_key_still_opens_what_it_sealed(self) -> None:
        old, new = base64.b64decode(new_key()), base64.b64decode(new_key())
        (sealed,) = await EncryptionCodec([old]).encode([Payload(data=b"x")])
        assert (await EncryptionCodec([new, old]).decode([sealed]))[0].data == b"x"
        with pytest.raises(EncryptionKeyError, match="not among SAGAS_ENCRYPTION_KEY"):
            await EncryptionCodec([new]).decode([sealed])


class TestSettingsConverter:
    """The settings wire their keys into the converter; the codec itself reads no settings."""

    def test_no_key_gives_the_plain_pydantic_converter(self) -> None:
        converter = Settings(encryption_key=None).data_converter()
        assert converter.payload_codec is None
        assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
        assert converter.failure_converter_class is FailureConverter

    def test_a_key_seals_with_it(self) -> None:
        key = new_key()
        converter = Settings(encryption_key=key).data_converter()
        assert isinstance(converter.payload_codec, EncryptionCodec)
        assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
        # Failures' messages and stack traces go into a payload, which the codec seals.
        assert issubclass(
            converter.failure_converter_class, DefaultFailureConverterWithEncodedAttributes
        )
        assert issubclass(converter.failure_converter_class, FailureConverter)


class TestProductionSettings:
    def test_unsafe_values_are_each_named(self) -> None:
        with pytest.raises(ValidationError) as refused:
            Settings(environment="production", database_url="sqlite:///x.sqlite")
        text = str(refused.value)
        for needle in ("SAGAS_ENCRYPTION_KEY", "SQLite"):
            assert needle in text
        # Only the API needs keys, and it says so itself (api.main); a worker is never asked.
        assert "SAGAS_API_KEYS" not in text

    def test_an_empty_key_counts_as_no_key(self) -> None:
        with pytest.raises(ValidationError, match="SAGAS_ENCRYPTION_KEY is not set"):
            Settings(
                environment="production",
                api_keys=["ops:0123456789abcdef"],
                encryption_key="",  # what compose's ${SAGAS_ENCRYPTION_KEY:-} gives
                database_url="postgresql://sagas@db/sagas",
            )

    def test_a_worker_needs_no_api_keys(self) -> None:
        settings = Settings(
            environment="production",
            api_keys=[],
            encryption_key=new_key(),
            database_url="postgresql://sagas@db/sagas",
        )
        assert settings.api_keys == []

    def test_safe_values_load(self) -> None:
        settings = Settings(
            environment="production",
            api_keys=["ops:" + "0123456789abcdef" * 2],
            encryption_key=new_key(),
            database_url="postgresql://sagas@db/sagas",
        )
        assert settings.environment == "production"


@pytest.mark.temporal
async def test_temporal_stores_only_sealed_payloads(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    client = await Client.connect(
        address, data_converter=Settings(encryption_key=new_key()).data_converter()
    )
    task_queue = f"tq-{uuid.uuid4()}"
    secret = f"tok_secret_{uuid.uuid4().hex}"
    async with build_worker(client, task_queue=task_queue, sagas=ALL):
        sagas = SagaClient(client, task_queue=task_queue)
        ledger.plan(secret)
        saga_id = await sagas.start("three_steps", {"order_id": secret, "amount": 7})
        state = await sagas.result(saga_id)
    assert state.status is SagaStatus.COMPLETED
    assert state.input is not None

    # Read back raw, without the key: what Temporal's database and UI hold.
    history = await dev_env.client.get_workflow_handle(saga_id).fetch_history()
    raw = history.to_json()
    assert secret not in raw
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING


@pytest.mark.temporal
async def test_temporal_stores_failure_messages_and_stack_traces_sealed(
    dev_env: WorkflowEnvironment,
) -> None:
    """A participant echoes the card token in its refusal: Temporal's history holds neither
    that message nor the stack trace in clear, and the saga still shows the error, masked."""
    address = dev_env.client.service_client.config.target_host
    client = await Client.connect(
        address, data_converter=Settings(encryption_key=new_key()).data_converter()
    )
    task_queue = f"tq-{uuid.uuid4()}"
    token = f"tok_secret_{uuid.uuid4().hex}"
    order_id = f"o-{uuid.uuid4().hex}"
    async with build_worker(client, task_queue=task_queue, sagas=ALL):
        sagas = SagaClient(client, task_queue=task_queue)
        saga_id = await sagas.start("card_declined", {"order_id": order_id, "card_token": token})
        state = await sagas.result(saga_id)
    assert state.status is SagaStatus.COMPENSATED
    step = state.step("check_card")
    assert step.status is StepStatus.FAILED
    # The engine reads the failure back as it was raised, masked as before.
    assert step.error == f"Declined: card [redacted] declined for order {order_id}"
    assert state.error is not None
    assert order_id in state.error
    assert token not in state.error

    history = await dev_env.client.get_workflow_handle(saga_id).fetch_history()
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failed, "the refused attempt is in the history"
    for failure in failed:
        assert (failure.message, failure.stack_trace) == ("Encoded failure", "")
        assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    raw = history.to_json()
    for clear in (token, order_id, "declined for order", "in check_card", 'File "'):
        assert clear not in raw, clear
