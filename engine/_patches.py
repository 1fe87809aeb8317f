"""The patch markers of the engine's behaviour changes, in one place.

Each marks, in a saga's history, that the saga ran under the changed behaviour, so that
histories recorded before the change replay as they ran (``workflow.patched``).

Replaying, ``workflow.patched`` answers from the markers of the workflow task being replayed.
A local activity's failure can reach the saga in a later workflow task live than it does in
replay (when a query arrives while the local activity runs); a patch first consulted right
after it would then be answered differently in replay, and the saga fail as
nondeterministic. A saga that has local steps is new: it carries ``LOCAL_STEPS``, recorded
before its first local attempt, and every later patch of generation 1 (below) is true for
it. So once ``LOCAL_STEPS`` is true in a run, those are answered true without being consulted
(``later``): no marker that replay could place differently, and one marker in the history, not
six (each patch marker comes with a search-attribute update, a write to the server's
visibility store). A patch of a later generation is consulted, and meets the race again unless
the saga's generation (below) answers it.

A saga started by this engine's client (``SagaClient.start``, the API, the CLI) carries its
generation in its start memo (``start_memo``), with its status, ``running``, already listed,
when every worker polling its task queue says in its identity that it runs a generation: the
oldest of theirs (``engine._generation_gate``). Every worker that runs such a saga then knows
every change of that generation: it runs them as new, with no marker (``started_new``), and
does not list the status again, nor list it completed. ``LOCAL_STEPS`` is the exception in
generation 1: it also guards a running saga against its definition turning steps local, a
change of the user's code, so it is always consulted. From generation 2 the start memo also
names the steps that run local (``LOCAL_MEMO``, from the starting client's definition), and
the saga runs exactly those local whatever its definition says later: no marker, and no
search-attribute update (``runs_local``); nor is a compensated saga listed compensated, its
workflow completing while listed compensating (or compensation_failed, when resolved) says so.
A saga without the stamp (started by
an older client, or by hand through Temporal) records its markers as before. Each marker
and each memo update is a write to the visibility store; together they were most of the
difference in the server's CPU per saga against the same saga hand-written
(docs/benchmarks.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from temporalio import workflow

#: A step turned local runs as a local activity (engine._attempts).
LOCAL_STEPS = "local-steps"
#: Compensations retry for about an hour by default (engine._compensation).
PATIENT_COMPENSATIONS = "patient-compensations"
#: A failed optional step whose outcome is unknown is undone at once (engine._forward).
UNDO_FAILED_OPTIONAL = "undo-failed-optional"
#: A refused fallback leaves the replaced action's outcome unknown (engine._forward).
FALLBACK_REFUSED_ACTION_UNKNOWN = "fallback-refused-action-unknown"
#: The action a fallback replaced is undone at once (engine._forward).
UNDO_REPLACED_ACTION = "undo-replaced-action"
#: A long saga continues as new (engine._continue).
CONTINUE_AS_NEW = "saga-continue-as-new"

#: The start memo's key for the engine generation that started the saga.
GENERATION_MEMO = "sagas_generation"
#: This engine's generation. Its behaviour changes are the patches above, for generation 1;
#: generation 2 adds the start memo's list of local steps (``LOCAL_MEMO``) and leaves a
#: compensated saga's last memo update out (engine._record). A patch added later belongs to
#: the next generation: leave it out of ``_GENERATION_1`` and raise this.
GENERATION = 2
#: The start memo's key, from generation 2, for the names of the steps that run as local
#: activities: the definition's, as the client that started the saga had it.
LOCAL_MEMO = "sagas_local_steps"
#: The patches a saga of generation 1 or later runs as new without consulting them.
_GENERATION_1 = frozenset(
    {
        PATIENT_COMPENSATIONS,
        UNDO_FAILED_OPTIONAL,
        FALLBACK_REFUSED_ACTION_UNKNOWN,
        UNDO_REPLACED_ACTION,
        CONTINUE_AS_NEW,
    }
)
_IDENTITY_TAG = "sagas-generation="
#: The memo key of the saga's status (engine._record lists it; SagaClient.list reads it).
STATUS_MEMO = "saga_status"

# Set on the workflow instance (one per run) once LOCAL_STEPS is true in the run.
_LOCAL_STEPS_ON = "_sagas_local_steps_on"
# The instance's answers of ``later`` so far in the run (patch -> answer).
_ANSWERS = "_sagas_patch_answers"
# The instance's reading of the start memo's generation.
_STAMP = "_sagas_stamp"
# The instance's reading of the start memo's local steps (None: no list).
_LISTED_LOCAL = "_sagas_listed_local_steps"


def worker_identity(identity: str) -> str:
    """A worker's identity, saying which generation it runs (engine._generation_gate)."""
    return f"{identity} {_IDENTITY_TAG}{GENERATION}"


def identity_generation(identity: str) -> int:
    """The generation a worker's identity says it runs (0: none, an older engine's)."""
    found = re.search(rf"{_IDENTITY_TAG}(\d+)", identity)
    return int(found.group(1)) if found else 0


def start_memo(
    generation: int = GENERATION, local_steps: Collection[str] | None = None
) -> dict[str, Any]:
    """What a saga's start memo says of it: its generation, its status, and from generation 2
    the steps that run local (``local_steps``; None, for a saga whose steps are not declared
    up front, an imperative one: its run consults ``LOCAL_STEPS`` as before). See the
    module's doc."""
    memo: dict[str, Any] = {GENERATION_MEMO: generation, STATUS_MEMO: "running"}
    if generation >= 2 and local_steps is not None:
        # In an object: Temporal drops a memo field that is an empty list.
        memo[LOCAL_MEMO] = {"names": sorted(local_steps)}
    return memo


def stamp() -> int:
    """The generation the saga was started with (0: none). Read from the start memo, which
    replay sees as it was; a continued run carries it along."""
    # Kept on the workflow's instance once there is one (not yet in its __init__): decoding
    # the memo each time would cost more.
    kept = getattr(workflow.instance(), "__dict__", {})
    if _STAMP not in kept:
        value = workflow.memo_value(GENERATION_MEMO, 0)
        valid = isinstance(value, int) and not isinstance(value, bool)
        kept[_STAMP] = value if valid else 0
    generation: int = kept[_STAMP]
    return generation


def started_new() -> bool:
    """The saga was started with a generation's stamp (1 or later): see the module's doc."""
    return stamp() >= 1


def runs_local(step_name: str, local: bool | None) -> bool:
    """Whether the step runs as a local activity in this saga. A saga stamped with its local
    steps (generation 2) runs exactly those: no marker, and a definition that turns steps local
    or regular while it runs changes nothing for it (``local``, the definition's own say, is
    not read). Otherwise, a step the definition makes local runs so once ``LOCAL_STEPS`` is
    true in the run."""
    instance = workflow.instance()
    if _LISTED_LOCAL not in instance.__dict__:
        listed = workflow.memo_value(LOCAL_MEMO, None) if stamp() >= 2 else None
        names = listed.get("names") if isinstance(listed, dict) else None
        instance.__dict__[_LISTED_LOCAL] = frozenset(names) if isinstance(names, list) else None
    listed_local: frozenset[str] | None = instance.__dict__[_LISTED_LOCAL]
    if listed_local is not None:
        return step_name in listed_local
    return bool(local) and local_steps_on()


def local_steps_on() -> bool:
    """Whether this saga runs its local steps as local activities (see the module's doc)."""
    instance = workflow.instance()
    if getattr(instance, _LOCAL_STEPS_ON, False):
        return True
    # Consulted even in a saga started new: the marker also keeps a running saga's steps
    # regular when its definition turns them local (a change of the user's code, not of the
    # engine's generation).
    if not workflow.patched(LOCAL_STEPS):
        return False
    setattr(instance, _LOCAL_STEPS_ON, True)
    return True


def later(patch: str) -> bool:
    """``workflow.patched(patch)``, for a patch the engine consults after a step has run: true
    at once, for a patch of generation 1, in a saga started new or a run whose local steps are
    on (see the module's doc). An answer given earlier in the run stands: a saga upgraded in
    flight that was told no before its first local step (its history has no marker) keeps the
    behaviour it started with."""
    instance = workflow.instance()
    answers: dict[str, bool] = instance.__dict__.setdefault(_ANSWERS, {})
    if patch not in answers:
        # Local steps on or the stamp: the saga runs on workers that know generation 1's
        # changes, not necessarily a later one's.
        known = patch in _GENERATION_1
        if known and started_new():
            answers[patch] = True
        else:
            on = getattr(instance, _LOCAL_STEPS_ON, False)
            answers[patch] = True if known and on else workflow.patched(patch)
    return answers[patch]
