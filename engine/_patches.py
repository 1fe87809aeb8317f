"""The patch markers of the engine's behaviour changes, in one place.

Each marks, in a saga's history, that the saga ran under the changed behaviour, so that
histories recorded before the change replay as they ran (``workflow.patched``).

Replaying, ``workflow.patched`` answers from the markers of the workflow task being replayed.
A local activity's failure can reach the saga in a later workflow task live than it does in
replay (when a query arrives while the local activity runs); a patch first consulted right
after it would then be answered differently in replay, and the saga fail as
nondeterministic. A saga that has local steps is new: it carries ``LOCAL_STEPS``, recorded
before its first local attempt, and every later patch is true for it. So once ``LOCAL_STEPS``
is true in a run, the later patches are answered true without being consulted (``later``):
no marker that replay could place differently, and one marker in the history, not six (each
patch marker comes with a search-attribute update, a write to the server's visibility store).
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

# Set on the workflow instance (one per run) once LOCAL_STEPS is true in the run.
_LOCAL_STEPS_ON = "_sagas_local_steps_on"
# The instance's answers of ``later`` so far in the run (patch -> answer).
_ANSWERS = "_sagas_patch_answers"


def local_steps_on() -> bool:
    """Whether this saga runs its local steps as local activities (see the module's doc)."""
    instance = workflow.instance()
    if getattr(instance, _LOCAL_STEPS_ON, False):
        return True
    if not workflow.patched(LOCAL_STEPS):
        return False
    setattr(instance, _LOCAL_STEPS_ON, True)
    return True


def later(patch: str) -> bool:
    """``workflow.patched(patch)``, for a patch the engine consults after a step has run: true
    at once in a run whose local steps are on (see the module's doc). An answer given earlier
    in the run stands: a saga upgraded in flight that was told no before its first local step
    (its history has no marker) keeps the behaviour it started with."""
    instance = workflow.instance()
    answers: dict[str, bool] = instance.__dict__.setdefault(_ANSWERS, {})
    if patch not in answers:
        on = getattr(instance, _LOCAL_STEPS_ON, False)
        answers[patch] = True if on else workflow.patched(patch)
    return answers[patch]
