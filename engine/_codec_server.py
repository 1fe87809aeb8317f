"""Temporal's codec server protocol, so that the Temporal UI and CLI can show sealed payloads.

The Temporal UI (or ``temporal workflow show --codec-endpoint``) posts the payloads it holds
to ``{endpoint}/decode`` and gets them back opened, with the same keys the engine seals them
with; ``/encode`` does the reverse. Both carry the protobuf JSON form of ``Payloads``::

    {"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}

A failure's message and stack trace travel the same way: the UI posts the failure's
``encoded_attributes`` (one payload) and gets ``{"message": ..., "stack_trace": ...}`` back.

A payload sealed with a key this process does not hold is an error naming it, not a payload
passed back still sealed: an operator should know why they cannot read it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from engine._errors import EncryptionKeyError, InvalidRequest


async def transcode(
    codec: PayloadCodec | None, body: dict[str, Any], *, encode: bool
) -> dict[str, Any]:
    """``body`` (the protocol's JSON) with every payload encoded or decoded by ``codec``.

    With no codec (no encryption key configured) payloads are returned as they came.
    """
    try:
        message = json_format.ParseDict(body, Payloads())
    except json_format.ParseError as exc:
        raise InvalidRequest(
            f"payloads: not the codec protocol's Payloads JSON ({exc})",
            errors=[{"loc": ("body", "payloads"), "msg": str(exc)}],
        ) from None
    payloads = list(message.payloads)
    if codec is not None:
        try:
            payloads = await (codec.encode(payloads) if encode else codec.decode(payloads))
        except EncryptionKeyError as exc:
            raise InvalidRequest(
                exc.message, errors=[{"loc": ("body", "payloads"), "msg": exc.message}]
            ) from None
    result: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=payloads))
    result.setdefault("payloads", [])
    return result
