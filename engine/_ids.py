"""The characters a saga id or a step name may hold, wherever one comes in.

Ids travel in URLs, log lines, Temporal workflow ids, idempotency keys and the store's text
columns (PostgreSQL refuses a NUL in text: a 500 until every way in checked it). One set for
all: letters, digits and ``_ . : @ + = -``, at most 200 characters (a step name: 100).
"""

from __future__ import annotations

import re

SAGA_ID_PATTERN = r"^[A-Za-z0-9_.:@+=-]{1,200}$"
STEP_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
SAGA_ID = re.compile(SAGA_ID_PATTERN)
STEP_NAME = re.compile(STEP_NAME_PATTERN)
#: Said in errors: what a saga id may be.
SAGA_ID_RULE = "1-200 letters, digits or '_.:@+=-'"


def is_saga_id(value: object) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return isinstance(value, str) and SAGA_ID.fullmatch(value) is not None
