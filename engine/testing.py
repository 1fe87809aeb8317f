"""Testing sagas: run a saga through every failure point and check the execution rules.

    from engine.testing import explore

    async def test_my_saga(saga_env):          # saga_env: a fixture of the pytest plugin
        await explore(my_saga, {"amount": 5}, env=saga_env)

``explore`` finds the failure points in the definition (each step refused, its outcome
unknown, each compensation failing for a while and for good, a cancel before and during each
step, approvals rejected and timed out, the worker restarted between steps), runs each on an
embedded Temporal with activity fakes, checks every run against the rules, and raises
``ExplorationFailed`` with the failing rows. ``Fakes`` stand in for a saga's activities in
tests of your own; ``SagaKit`` runs a worker for them. The pytest plugin (installed with the
package) provides the ``saga_env`` and ``saga_kit`` fixtures.
"""

from engine._kit_env import SagaKit, temporal_for_tests
from engine._kit_explore import Check, Exploration, ExplorationFailed, Row, explore
from engine._kit_fakes import Behaviour, Call, Fakes, Fault, StepFake
from engine._kit_rules import Run

__all__ = [
    "Behaviour",
    "Call",
    "Check",
    "Exploration",
    "ExplorationFailed",
    "Fakes",
    "Fault",
    "Row",
    "Run",
    "SagaKit",
    "StepFake",
    "explore",
    "temporal_for_tests",
]
