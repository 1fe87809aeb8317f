"""Saga data as it may leave Temporal: card data and secrets masked by the redaction rules.

Temporal holds a saga's input, step outputs and errors sealed (``_codec``); the saga store and
the API hold and show them outside it. There, every field that the log redaction rules
(``_logging``: secret-looking keys, card tokens and card numbers in text) would mask is
masked too, in what the store keeps and in what the API answers: an operator reading a saga,
or anyone reading the database file, sees ``[redacted]`` where the card token was.

Only the data fields are masked (input, result, step outputs, errors and free-text reasons);
ids, types, step names, statuses and times are the saga's structure and are kept as they are
(a saga id made of digits must not turn into ``[redacted]``).

What is masked is gone from the store: the saga's own input, unmasked, stays in Temporal
(sealed), where its steps read it; the idempotency fingerprint is taken from the unmasked
input before the store sees it, so two requests that differ only in a card token are still
two requests.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine._logging import redact_text, redact_value
from engine._state import SagaState

#: Free text a person or a participant wrote: masked by shape (card tokens, card numbers).
_SAGA_TEXT = ("error", "cancel_reason")
_STEP_TEXT = ("error",)
_COMPENSATION_TEXT = ("error", "resolution")
_DECISION_TEXT = ("comment",)


def mask_text(text: str | None) -> str | None:
    """Free text with card tokens and card numbers masked."""
    return None if text is None else redact_text(text)


def mask_data(value: Any) -> Any:
    """A JSON-like value (an input, an output) with secret keys and secret-looking text
    masked, at any depth; a pydantic model is taken in its JSON form first."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return redact_value(value)


def mask_snapshot(data: dict[str, Any]) -> dict[str, Any]:
    """A saga state in its JSON form (``SagaState.model_dump(mode="json")``), masked: a copy."""
    masked = dict(data)
    for field in ("input", "result"):
        if masked.get(field) is not None:
            masked[field] = mask_data(masked[field])
    _mask_texts(masked, _SAGA_TEXT)
    if masked.get("steps"):
        masked["steps"] = [mask_step(step) for step in masked["steps"]]
    return masked


def mask_step(step: dict[str, Any]) -> dict[str, Any]:
    """A step state in its JSON form, masked: its output, its error, its compensation's error
    and resolution, its decision's comment."""
    masked = dict(step)
    if masked.get("output") is not None:
        masked["output"] = mask_data(masked["output"])
    _mask_texts(masked, _STEP_TEXT)
    for field, texts in (("compensation", _COMPENSATION_TEXT), ("approval", _DECISION_TEXT)):
        if isinstance(masked.get(field), dict):
            masked[field] = _mask_texts(dict(masked[field]), texts)
    return masked


def mask_state(state: SagaState) -> SagaState:
    """A saga state as the API shows it: :func:`mask_snapshot` of it, as a state again."""
    return SagaState.model_validate(mask_snapshot(state.model_dump(mode="json")))


def _mask_texts(data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    for field in fields:
        if isinstance(data.get(field), str):
            data[field] = redact_text(data[field])
    return data
