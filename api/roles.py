"""Roles of API keys, and which one each route needs.

``read`` sees sagas and saga types (inputs included) and opens payloads through the codec
server; ``start`` starts sagas; ``operate`` cancels, retries and resolves; ``approve`` approves
and rejects. A key given no roles (``SAGAS_API_KEY_ROLES`` does not name it) keeps them all,
so settings written before roles existed keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from engine import SagaError


class Role(StrEnum):
    READ = "read"
    START = "start"
    OPERATE = "operate"
    APPROVE = "approve"


ALL_ROLES = frozenset(Role)


class MissingRole(SagaError):
    """The key is valid but lacks the role that the route needs."""

    http_status = 403
    code = "missing_role"


class FourEyes(SagaError):
    """With four eyes on, the key that started a saga may not approve it."""

    http_status = 403
    code = "four_eyes"


#: Routes whose role is not the default (GET: read; anything else: operate), by method and
#: path template. A new route gets the default: the strictest that fits most.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("POST", "/sagas/{saga_type}"): Role.START,
    ("POST", "/sagas/{saga_id}/approve"): Role.APPROVE,
    ("POST", "/sagas/{saga_id}/reject"): Role.APPROVE,
    # The codec server opens (and seals) payloads: reading, in effect.
    ("POST", "/codec/decode"): Role.READ,
    ("POST", "/codec/encode"): Role.READ,
}


def role_for(method: str, path_template: str) -> Role:
    """The role a route needs."""
    default = Role.READ if method in ("GET", "HEAD") else Role.OPERATE
    return ROUTE_ROLES.get((method, path_template), default)


def parse_roles(entries: Iterable[str], names: Iterable[str]) -> dict[str, frozenset[Role]]:
    """``name:role+role`` entries as roles by key name; ValueError naming what is wrong."""
    known = set(names)
    roles: dict[str, frozenset[Role]] = {}
    for entry in entries:
        name, sep, listed = entry.partition(":")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"SAGAS_API_KEY_ROLES: {entry!r} is not name:role+role")
        if name not in known:
            raise ValueError(f"SAGAS_API_KEY_ROLES: no API key is named {name!r}")
        wanted = [r.strip() for r in listed.replace(" ", "+").split("+") if r.strip()]
        unknown = [r for r in wanted if r not in Role.__members__.values()]
        if unknown or not wanted:
            raise ValueError(
                f"SAGAS_API_KEY_ROLES: key {name!r}: roles are {', '.join(Role)} (got {listed!r})"
            )
        roles[name] = frozenset(Role(r) for r in wanted)
    return roles
