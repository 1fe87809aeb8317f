"""A value of a declared type, for activity fakes that must answer like the real activity.

The saga workflow decodes an activity's answer with the real activity's return type, and later
steps read it (``done["price_trip"].total``), so a fake answers with a value of that type:
pydantic models get each required field filled the same way, recursively.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def return_type(fn: Callable[..., Any]) -> Any:
    """The declared return type of ``fn`` (``Any`` if it declares none)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: answer with nothing in particular
        return Any
    return hints.get("return", Any)


def sample(tp: Any, label: str = "fake") -> Any:
    """A plain value of type ``tp``: zero, empty, the first choice, ``label`` for strings."""
    return _sample(tp, label, depth=0)


def _sample(tp: Any, label: str, depth: int) -> Any:
    if depth > 8 or tp is Any or tp is None or tp is type(None):
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _sample(args[0], label, depth + 1)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args:
            return None
        return _sample(args[0], label, depth + 1)
    if origin is typing.Literal:
        return args[0]
    if origin in (list, set, frozenset, tuple) or tp in (list, set, frozenset, tuple):
        return origin() if origin is not None else tp()
    if origin is dict or tp is dict:
        return {}
    if isinstance(tp, type):
        return _of_class(tp, label, depth)
    return None


def _of_class(tp: type, label: str, depth: int) -> Any:
    if issubclass(tp, BaseModel):
        values = {}
        for name, field in tp.model_fields.items():
            if field.is_required():
                values[name] = _sample(field.annotation, label, depth + 1)
        # No validation: a fake answer need not meet the constraints of a real one.
        return tp.model_construct(**values)
    if issubclass(tp, enum.Enum):
        return next(iter(tp))
    if issubclass(tp, bool):
        return False
    if issubclass(tp, int | float):
        return tp(0)
    if issubclass(tp, str):
        return label
    if issubclass(tp, bytes):
        return b""
    if issubclass(tp, datetime.datetime):
        return datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    if issubclass(tp, datetime.date):
        return datetime.date(2000, 1, 1)
    if issubclass(tp, uuid.UUID):
        return uuid.UUID(int=0)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {
            f.name: _sample(hints.get(f.name, Any), label, depth + 1)
            for f in dataclasses.fields(tp)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        return tp(**kwargs)
    return None
