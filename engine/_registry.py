"""Saga definitions known to this process, by name.

The worker fills it from the modules it is told to load; the saga workflow reads it. The
workflow sandbox passes the ``engine`` package through, so both see this same dictionary.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from engine._definition import SagaDefinition
from engine._errors import SagaDefinitionError, UnknownSagaType

# name -> version -> definition. Several versions of one saga live side by side while the
# sagas started on an older one finish (see versions()).
_definitions: dict[str, dict[int, SagaDefinition[Any]]] = {}


def register(*definitions: SagaDefinition[Any]) -> None:
    for definition in definitions:
        by_version = _definitions.setdefault(definition.name, {})
        known = by_version.get(definition.version)
        if known is not None and known is not definition:
            raise SagaDefinitionError(
                f"two different sagas are named {definition.name!r} with version "
                f"{definition.version} ({_origin(known)} and {_origin(definition)}); "
                "give the new one a higher version"
            )
        by_version[definition.version] = definition


def get(name: str) -> SagaDefinition[Any]:
    """The newest version of saga ``name``: what new sagas run."""
    found = find(name)
    if found is None:
        known = ", ".join(sorted(_definitions)) or "none"
        raise UnknownSagaType(f"unknown saga type {name!r} (registered: {known})")
    return found


def find(name: str) -> SagaDefinition[Any] | None:
    versions = _definitions.get(name)
    return versions[max(versions)] if versions else None


def versions(name: str) -> list[SagaDefinition[Any]]:
    """Every registered version of saga ``name``, newest first."""
    by_version = _definitions.get(name, {})
    return [by_version[v] for v in sorted(by_version, reverse=True)]


def registered() -> list[SagaDefinition[Any]]:
    """The newest version of each saga, by name."""
    return [d for name in sorted(_definitions) if (d := find(name)) is not None]


def load_modules(names: Iterable[str]) -> list[SagaDefinition[Any]]:
    """Import modules (and, for packages, their submodules) and register the sagas in them."""
    found: list[SagaDefinition[Any]] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise SagaDefinitionError(f"cannot import saga module {name!r}: {exc}") from exc
        for mod in _with_submodules(module):
            found.extend(v for v in vars(mod).values() if isinstance(v, SagaDefinition))
    unique = list({id(d): d for d in found}.values())
    register(*unique)
    return unique


def _with_submodules(module: ModuleType) -> list[ModuleType]:
    modules = [module]
    path = getattr(module, "__path__", None)
    if path is not None:
        for info in pkgutil.iter_modules(path, prefix=module.__name__ + "."):
            modules.append(importlib.import_module(info.name))
    return modules


def _origin(definition: SagaDefinition[Any]) -> str:
    return getattr(definition, "_module", None) or type(definition).__name__
