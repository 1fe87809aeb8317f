"""The patch markers of the engine's behaviour changes, in one place.

Each marks, in a saga's history, that the saga ran under the changed behaviour, so that
histories recorded before the change replay as they ran (``workflow.patched``).

Replaying, ``workflow.patched`` answers from the markers of the workflow task being replayed.
A local activity's failure can reach the saga in a later workflow task live than it does in
replay (when a query arrives while the local activity runs); a patch first consulted right
after it would then be answered differently in replay, and the saga fail as
nondeterministic. So a saga consults every later patch once before its first local attempt
(``consult_before_local_steps``): their markers are then recorded there, where replay finds
them, and the answers are kept for the rest of the run. A saga that has local steps is new
(it carries ``LOCAL_STEPS``), so every answer is the one it would have got later anyway.
"""

from __future__ import annotations

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

_LATER = (
    PATIENT_COMPENSATIONS,
    UNDO_FAILED_OPTIONAL,
    FALLBACK_REFUSED_ACTION_UNKNOWN,
    UNDO_REPLACED_ACTION,
    CONTINUE_AS_NEW,
)


def local_steps_on() -> bool:
    """Whether this saga runs its local steps as local activities; if so, the patches the
    saga may consult later are consulted now (see the module's doc)."""
    if not workflow.patched(LOCAL_STEPS):
        return False
    for patch in _LATER:
        workflow.patched(patch)
    return True
