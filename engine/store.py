"""The saga store, for the API and operators: sagas, steps, idempotency keys, actions.

Workers keep it in step with the sagas (``build_worker(..., store=SagaStore(url))``); the API
reads it to list and show sagas and writes idempotency keys and operator actions to it.
What it keeps is masked (``mask_*``: card data and secrets by the log redaction rules); the
API masks what it shows the same way.
"""

from engine._errors import InvalidCursor, KeyConflict
from engine._masking import mask_data, mask_snapshot, mask_state, mask_text
from engine._projection import Projector, read_from_temporal
from engine._state import FINAL_STATUSES
from engine._store import OperatorAction, Page, SagaStore, StoredSaga, tune_sqlite, with_driver

__all__ = [
    "FINAL_STATUSES",
    "InvalidCursor",
    "KeyConflict",
    "OperatorAction",
    "Page",
    "Projector",
    "SagaStore",
    "StoredSaga",
    "mask_data",
    "mask_snapshot",
    "mask_state",
    "mask_text",
    "read_from_temporal",
    "tune_sqlite",
    "with_driver",
]
