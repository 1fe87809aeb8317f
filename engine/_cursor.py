"""The list cursor: where a page of sagas ended, as an opaque URL-safe string.

A page is ordered newest first by (created_at, id); the cursor carries the last item's pair,
base64url-encoded JSON without padding. A string this codec did not produce is refused with
:class:`~engine._errors.InvalidCursor` (a 400 at the API).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from engine._errors import InvalidCursor
from engine._ids import is_saga_id


def encode_cursor(created_at: datetime, saga_id: str) -> str:
    raw = json.dumps([_utc(created_at).isoformat(), saga_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) pair of a cursor; InvalidCursor if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, saga_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if not is_saga_id(saga_id):  # the id goes into the query: a NUL is a 500 on PostgreSQL
            raise TypeError
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor("cursor: not a cursor this API returned") from None
    return _utc(when), saga_id


def _utc(value: datetime) -> datetime:
    # Times in the store are UTC; SQLite hands them back without a zone.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
