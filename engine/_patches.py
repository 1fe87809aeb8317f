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
once every worker polling its task queue says in its identity that it runs this generation
or a later one (``engine._generation_gate``). Every worker that runs such a saga then knows
every change of that generation: it runs them as new, with no marker (``started_new``), and
does not list the status again, nor list it completed. ``LOCAL_STEPS`` is the exception: it
also guards a running saga against its definition turning steps local, a change of the user's
code, so it is always consulted. A saga without the stamp (started by an older client, or by
hand through Temporal) records its markers as before. Each marker
and each memo update is a write to the visibility store; together they were most of the
difference in the server's CPU per saga against the same saga hand-written
(docs/benchmarks.md).
"""

from __future__ import annotations

import re
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
#: This engine's generation. Its behaviour changes are the patches above; a patch added later
#: belongs to the next generation: leave it out of ``_GENERATION_1`` and raise this.
GENERATION = 1
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


def worker_identity(identity: str) -> str:
    """A worker's identity, saying which generation it runs (engine._generation_gate)."""
    return f"{identity} {_IDENTITY_TAG}{GENERATION}"


def identity_generation(identity: str) -> int:
    """The generation a worker's identity says it runs (0: none, an older engine's)."""
    found = re.search(rf"{_IDENTITY_TAG}(\d+)", identity)
    return int(found.group(1)) if found else 0


def start_memo() -> dict[str, Any]:
    """What a saga's start memo says of it: this generation, and its status (see the module's
    doc)."""
    return {GENERATION_MEMO: GENERATION, STATUS_MEMO: "running"}


def started_new() -> bool:
    """The saga was started with this generation's stamp (or a later one's): see the module's
    doc. Read from the start memo, which replay sees as it was."""
    stamp = workflow.memo_value(GENERATION_MEMO, 0)
    return isinstance(stamp, int) and not isinstance(stamp, bool) and stamp >= 1


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
