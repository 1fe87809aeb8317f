"""What routes need, named so that a signature reads as prose.

A route asks for ``saga_id: SagaId, service: ServiceDep, caller: Caller``: a validated path
parameter, the API's use cases, and the name of the key that called.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Body, Depends, Header, Path, Query, Request

from api.auth import require_key
from api.models import CancelBody, DecisionBody, SagaFilters
from api.service import SagaService
from engine._ids import SAGA_ID_PATTERN, STEP_NAME_PATTERN


async def get_service(request: Request) -> SagaService:
    service: SagaService = request.app.state.service
    return service


#: The API's use cases over Temporal, the saga store and metrics (built by the lifespan).
ServiceDep = Annotated[SagaService, Depends(get_service)]
#: The name of the caller's API key ("anonymous" when no keys are configured).
Caller = Annotated[str, Depends(require_key)]

SagaType = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$", examples=["trip_booking"])]
SagaId = Annotated[str, Path(pattern=SAGA_ID_PATTERN, examples=["trip_booking-1b2c"])]
StepName = Annotated[str, Path(pattern=STEP_NAME_PATTERN, examples=["reserve_flight"])]
#: A start's input: any JSON object, validated against the saga type's input model.
SagaInput = Annotated[dict[str, Any], Body(examples=[{"...": "the saga's input"}])]
#: Optional bodies of the operator actions: a cancel reason, a decision's comment.
CancelRequest = Annotated[CancelBody | None, Body()]
DecisionRequest = Annotated[DecisionBody | None, Body()]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$"),
]
#: ``?wait=N`` on a get: answer once the saga is settled, or after N seconds.
WaitSeconds = Annotated[
    float | None,
    Query(ge=0, le=3600, description="Seconds to wait for the saga to end or need a person"),
]


def prefer_wait(prefer: Annotated[str | None, Header(alias="Prefer")] = None) -> int | None:
    """``wait=N`` from a ``Prefer`` header (RFC 7240), None without one.

    Preferences are comma-separated, each ``token[=value]`` with optional ``;`` parameters;
    one that cannot be read is ignored, as the RFC asks of a preference a server does not
    understand.
    """
    for preference in (prefer or "").split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        # ASCII digits only (str.isdigit also takes "²"), and few of them.
        if re.fullmatch(r"[0-9]{1,6}", value):
            return int(value)
    return None


#: ``Prefer: wait=N`` on a start.
PreferWait = Annotated[int | None, Depends(prefer_wait)]
#: The list's filters and page, as query parameters.
SagaQuery = Annotated[SagaFilters, Query()]
