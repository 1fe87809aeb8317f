"""``explore``: run a saga through every failure point and check each run against the rules.

One exploration has one set of fakes and its own task queue. A baseline run (every fake
succeeding) shows the saga's shape (engine._kit_scenarios); the scenarios then run
concurrently, each a saga of its own, while the clock of the time-skipping server moves the
engine's backoffs along. Those that need the whole clock or a worker of their own (an
approval's timeout, a worker restart) run after. Every saga is settled before ``explore``
returns: a saga parked in ``compensation_failed`` is retried with its compensations healed,
and one that does not settle in time is terminated, so no workflow is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from engine._client import SagaClient
from engine._definition import SagaDefinition
from engine._errors import SagaConflict, SagaNotFound
from engine._imperative import ImperativeSaga
from engine._kit_env import Clock, temporal_for_tests, worker_for
from engine._kit_fakes import Fakes
from engine._kit_rules import Run, check_rules, effect_name
from engine._kit_scenarios import (
    Scenario,
    Shape,
    approval_scenarios,
    approval_wait,
    forward_scenarios,
    pick_trigger,
    restart_scenarios,
    undo_scenarios,
)
from engine._patches import GENERATION
from engine._state import SagaState, SagaStatus, StepStatus
from engine._step import StepKind, activity_name
from engine._step_info import COMPENSATION, FORWARD

#: A user's own check of a run: raise (an AssertionError, say) to fail the scenario.
Check = Callable[[Run], Awaitable[None] | None]

#: Real seconds a scenario may take before it is declared stuck (and its saga terminated); on
#: a dev server, where the engine's backoffs take real time (a compensation that fails for
#: good waits about 30 s), ten times that.
SCENARIO_TIMEOUT = 30.0
#: The workflow task timeout of sagas whose worker the kit restarts.
RESTART_TASK_TIMEOUT = timedelta(seconds=2)
#: Real seconds a state query may take before it is asked again.
QUERY_TIMEOUT = 2.0
#: Scenarios in flight at once.
CONCURRENCY = 12


@dataclass
class Row:
    scenario: str
    expected: str
    seen: str
    problems: list[str] = field(default_factory=list)
    #: Not run: the fakes' answers never lead there (say why in ``problems``... as a note).
    skipped: str | None = None
    #: Real time the scenario took.
    seconds: float = 0.0
    #: The saga the scenario ran (none for a skipped row).
    saga_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "skipped" if self.skipped else "ok" if self.ok else "FAIL"


@dataclass
class Exploration:
    """The table of an exploration: one row per scenario."""

    saga: str
    rows: list[Row]
    seconds: float

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if not row.ok]

    def table(self, *, only_failed: bool = False) -> str:
        rows = self.failed if only_failed else self.rows
        head = ("SCENARIO", "EXPECTED", "SEEN", "VERDICT")
        cells = [head, *((r.scenario, r.expected, r.seen, r.verdict) for r in rows)]
        widths = [max(len(c[i]) for c in cells) for i in range(3)]
        lines = []
        for cell, row in zip(cells, [None, *rows], strict=True):
            lines.append("  ".join([*(c.ljust(w) for c, w in zip(cell, widths, strict=False)),
                                    cell[3]]).rstrip())  # fmt: skip
            if row is not None:
                lines.extend(f"    - {problem}" for problem in row.problems)
                if row.skipped:
                    lines.append(f"    - {row.skipped}")
        return "\n".join(lines)

    def summary(self) -> str:
        skipped = sum(1 for row in self.rows if row.skipped)
        also = f" ({skipped} skipped)" if skipped else ""
        return (
            f"{self.saga}: {len(self.rows)} scenarios{also}, {len(self.failed)} failed, "
            f"{self.seconds:.1f} s"
        )

    def __str__(self) -> str:
        return f"{self.table()}\n{self.summary()}"


class ExplorationFailed(AssertionError):
    """Some scenarios broke the rules; ``exploration`` holds the whole table."""

    def __init__(self, exploration: Exploration) -> None:
        super().__init__(f"{exploration.summary()}\n{exploration.table(only_failed=True)}")
        self.exploration = exploration


async def explore(
    saga: SagaDefinition[Any],
    input: Any,
    *,
    env: WorkflowEnvironment | None = None,
    fakes: Fakes | None = None,
    returns: Mapping[str, Any] | None = None,
    check: Check | None = None,
    passthrough: bool = False,
    only: str | None = None,
    raise_on_failure: bool = True,
) -> Exploration:
    """Run ``saga`` with ``input`` through every failure point; return the table.

    ``env``: a Temporal test environment (default: a time-skipping test server for this
    call). ``returns``: answers of the fakes by step (a value or a function of the step's
    argument), e.g. to reach an approval. ``check``: your own check of each run (raise to
    fail it), e.g. against a ledger. ``passthrough``: the fakes call the real activities
    (real participants) and inject the faults around them. ``only``: run the scenarios whose
    name contains it (and the baseline). Raises ``ExplorationFailed`` with the failing rows
    unless ``raise_on_failure=False``.
    """
    if env is None:
        async with temporal_for_tests() as own:
            return await explore(
                saga, input, env=own, fakes=fakes, returns=returns, check=check,
                passthrough=passthrough, only=only, raise_on_failure=raise_on_failure,
            )  # fmt: skip
    saga.validate_input(input)
    fakes = fakes or Fakes(saga, passthrough=passthrough)
    for step, value in (returns or {}).items():
        fakes.step(step).returns(value)
    explorer = _Explorer(env, saga, input, fakes, check, only)
    started = time.monotonic()
    rows = await explorer.run()
    exploration = Exploration(saga.name, rows, time.monotonic() - started)
    if raise_on_failure and exploration.failed:
        raise ExplorationFailed(exploration)
    return exploration


@dataclass
class _Outcome:
    row: Row
    run: Run | None


class _Explorer:
    def __init__(
        self,
        env: WorkflowEnvironment,
        saga: SagaDefinition[Any],
        input: Any,
        fakes: Fakes,
        check: Check | None,
        only: str | None = None,
    ) -> None:
        self.env, self.saga, self.input, self.fakes, self.check = env, saga, input, fakes, check
        self.only = only
        skips = env.supports_time_skipping
        self.scenario_timeout = SCENARIO_TIMEOUT * (1 if skips else 10)
        self.task_queue = f"explore-{saga.name}-{uuid.uuid4().hex[:8]}"
        self.client = SagaClient(
            env.client, task_queue=self.task_queue, workers_generation=GENERATION
        )
        self.shape: Shape | None = None
        self._n = 0

    async def run(self) -> list[Row]:
        outcomes: list[_Outcome] = []
        async with worker_for(self.env, [self.saga], task_queue=self.task_queue, fakes=self.fakes):
            async with Clock(self.env):
                outcomes = await self._with_clock()
            if self.shape is not None:
                # Last and alone: moving the clock past an approval's window moves every saga's.
                for scenario in self._selected(approval_scenarios(self.shape, timeout=True)):
                    if not self.env.supports_time_skipping:
                        why = "an approval's window passes only on the time-skipping server"
                        outcomes.append(_Outcome(Row(scenario.name, "-", "-", skipped=why), None))
                        continue
                    outcomes.append(await self.scenario(scenario))
        return [o.row for o in outcomes]

    def _selected(self, scenarios: list[Scenario]) -> list[Scenario]:
        return [s for s in scenarios if self.only is None or self.only in s.name]

    async def _with_clock(self) -> list[_Outcome]:
        baseline = Scenario("completes", frozenset({SagaStatus.COMPLETED}))
        outcomes = [await self.scenario(baseline, shape_from_baseline=True)]
        if self.shape is None:
            return outcomes
        shape = self.shape
        forward = [s for s in forward_scenarios(shape) if s.name != "completes"]
        forward = self._selected(forward + approval_scenarios(shape, timeout=False))
        forward, unsupported = self._runnable(forward, shape)
        outcomes += await self.concurrently(forward, self.scenario)
        outcomes += unsupported
        outcomes += [_Outcome(row, None) for row in self._unreached_approvals(shape)]
        ran = list(zip([baseline, *forward], outcomes, strict=False))
        # An imperative saga names its compensations only as it runs: those seen so far.
        undone = {
            (c.step, c.fallback)
            for o in outcomes
            if o.run
            for c in o.run.calls
            if c.phase == COMPENSATION
        }
        undo: list[Scenario] = []
        # Each compensation activity: the step's own, and its fallback's (when one served).
        effects = [(step, False) for step in shape.steps] + [
            (step, True) for step in shape.steps if step in shape.fallback_undo
        ]
        for step, fallback in effects:
            declared = shape.fallback_undo if fallback else shape.has_undo
            if step not in declared and (step, fallback) not in undone:
                continue
            candidates = [
                (s, o.run is not None and o.row.ok and _undid(o.run, step, fallback), _status(o))
                for s, o in ran
                if o.run is not None
            ]
            picked = pick_trigger(step, candidates)
            name = effect_name(step, fallback)
            if picked is not None:
                undo += undo_scenarios(step, *picked, fallback=fallback)
            elif self.only is None:
                problem = f"no scenario compensated {name}"
                row = Row(f"undo of {name} fails", "-", "not reached", [problem])
                outcomes.append(_Outcome(row, None))
        outcomes += await self.concurrently(self._selected(undo), self.scenario)
        restarts = self._selected(restart_scenarios(shape))
        outcomes += await self.concurrently(restarts, self.restart_scenario)
        return outcomes

    def _runnable(
        self, scenarios: list[Scenario], shape: Shape
    ) -> tuple[list[Scenario], list[_Outcome]]:
        """The scenarios to run, and rows for those that cannot be.

        A cancel does not interrupt a local step's attempt (engine._attempts): it lands when
        the attempt has ended. A fake that hangs until cancelled would then hang until the
        step's start-to-close timeout; so the cancels during a local step are left out.
        """
        runnable: list[Scenario] = []
        skipped: list[_Outcome] = []
        for scenario in scenarios:
            if scenario.cancel_at is not None and scenario.cancel_at in shape.local:
                why = "a cancel does not interrupt a local step: it lands when the attempt ends"
                skipped.append(_Outcome(Row(scenario.name, "-", "-", skipped=why), None))
            else:
                runnable.append(scenario)
        return runnable, skipped

    def _unreached_approvals(self, shape: Shape) -> list[Row]:
        """Approvals the baseline never waited for: their ``when`` was false with the fakes'
        answers. Say so, rather than leave them out of the table unnoticed."""
        rows = []
        for step in self.saga.steps:
            name = step.step_name
            if step.approval is None or name not in shape.steps or name in shape.approvals:
                continue
            why = "the step did not wait for approval with the fakes' answers (pass returns=)"
            for how in ("rejected", "times out"):
                rows.append(Row(f"approval of {name} {how}", "-", "-", skipped=why))
        return rows

    async def concurrently(
        self, scenarios: list[Scenario], run: Callable[[Scenario], Awaitable[_Outcome]]
    ) -> list[_Outcome]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(scenario: Scenario) -> _Outcome:
            async with gate:
                return await run(scenario)

        return list(await asyncio.gather(*(one(s) for s in scenarios)))

    # ------------------------------------------------------------- one scenario

    def new_id(self) -> str:
        self._n += 1
        return f"{self.saga.name}-kit{self._n}-{uuid.uuid4().hex[:8]}"

    async def restart_scenario(self, scenario: Scenario) -> _Outcome:
        """On a task queue and worker of its own, stopped and replaced between two stages."""
        queue = f"{self.task_queue}-restart-{uuid.uuid4().hex[:8]}"
        client = SagaClient(self.env.client, task_queue=queue, workers_generation=GENERATION)
        first = worker_for(self.env, [self.saga], task_queue=queue, fakes=self.fakes,
                           restartable=True)  # fmt: skip
        holder: dict[str, Any] = {"worker": first, "tasks": [asyncio.create_task(first.run())]}
        try:
            return await self.scenario(scenario, client=client, workers=holder)
        finally:
            await holder["worker"].shutdown()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*holder["tasks"]), 15)

    async def scenario(
        self,
        scenario: Scenario,
        *,
        shape_from_baseline: bool = False,
        client: SagaClient | None = None,
        workers: dict[str, Any] | None = None,
    ) -> _Outcome:
        client = client or self.client
        saga_id = self.new_id()
        began = time.monotonic()
        for (step, phase), behaviour in scenario.faults.items():
            self.fakes.tell(saga_id, step, phase, behaviour)
        expected = "|".join(sorted(s.value for s in scenario.expected))
        if scenario.failing_undos:
            expected = f"compensation_failed, then {expected}"
        problems: list[str] = []
        helpers: list[asyncio.Task[None]] = []
        run: Run | None = None
        try:
            # With workers to restart, a short workflow task timeout: a stopping worker's last
            # open poll may still be handed the saga's next task, which is then lost until the
            # timeout (Temporal's default, 10 s) gives it to the new worker.
            await client.start(
                self.saga.name,
                self.input,
                saga_id=saga_id,
                task_timeout=None if workers is None else RESTART_TASK_TIMEOUT,
            )
            refused: list[bool] = []
            if scenario.cancel_at is not None:
                helpers.append(asyncio.create_task(
                    self._cancel(client, saga_id, scenario.cancel_at, refused)))  # fmt: skip
            if scenario.restart_after and workers is not None:
                helpers.append(asyncio.create_task(
                    self._restart(saga_id, scenario.restart_after, workers)))  # fmt: skip
            async with asyncio.timeout(self.scenario_timeout):
                final, parked, awaited = await self._drive(client, saga_id, scenario)
                for helper in helpers:
                    await helper
            run = Run(
                scenario=scenario.name,
                saga_id=saga_id,
                state=final,
                calls=self.fakes.calls(saga_id),
                parked=parked,
                cancel_refused=bool(refused and refused[0]),
                failing_undos=scenario.failing_undos,
            )
            if shape_from_baseline:
                self.shape = self._shape(run, awaited)
            self._describe(run)
            seen = final.status.value
            if parked is not None:
                seen = f"compensation_failed, then {seen}"
            if final.status not in scenario.expected:
                problems.append(f"status: ended {final.status.value}")
            if (
                scenario.cancel_at is not None
                and bool(refused and refused[0]) != scenario.cancel_refused
            ):
                problems.append("cancel: " + ("refused" if refused and refused[0] else "accepted")
                                + " against the rules")  # fmt: skip
            problems += check_rules(run)
            if self.check is not None:
                problems += await self._user_check(run)
        except TimeoutError:
            seen = "did not settle"
            problems.append(f"did not settle within {self.scenario_timeout:g} s; terminated")
            problems += [
                f"{c.step} {c.phase} attempt {c.attempt}: {c.outcome}"
                for c in self.fakes.calls(saga_id)
            ]
            stuck = await _state(client, saga_id)
            if stuck is not None:
                problems.append(
                    f"stuck {stuck.status.value}: "
                    + ", ".join(f"{s.name}={s.status.value}" for s in stuck.steps)
                )
        except Exception as exc:  # a broken scenario is a failing row, not a crashed table
            seen = "error"
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            for helper in helpers:
                helper.cancel()
            await self._settle(client, saga_id)
        seconds = time.monotonic() - began
        row = Row(scenario.name, expected, seen, problems, seconds=seconds, saga_id=saga_id)
        return _Outcome(row, run)

    async def _drive(
        self, client: SagaClient, saga_id: str, scenario: Scenario
    ) -> tuple[SagaState, SagaState | None, list[str]]:
        """Answer approvals, repair a parked saga once, until the saga ends."""
        parked: SagaState | None = None
        awaited: list[str] = []
        while True:
            state = await _state(client, saga_id)
            if state is None:
                await asyncio.sleep(0.02)
                continue
            if state.status.is_final:
                return state, parked, awaited
            if state.status is SagaStatus.AWAITING_APPROVAL:
                step = state.awaiting_approval[0]
                awaited.append(step)
                if scenario.approval == "reject":
                    await client.reject(saga_id, by="kit", comment="rejected by the kit")
                elif scenario.approval == "time_out":
                    wait = self._approval_timeout(step)
                    await self.env.sleep(wait)
                else:
                    await client.approve(saga_id, by="kit")
            elif state.status is SagaStatus.COMPENSATION_FAILED:
                failed = [s.name for s in state.steps if s.status is StepStatus.COMPENSATION_FAILED]
                if parked is None:
                    parked = state
                    for step in failed:
                        self.fakes.undo(step, saga_id=saga_id).succeed()
                        self.fakes.fallback_undo(step, saga_id=saga_id).succeed()
                    await client.retry_compensations(saga_id)
                else:  # parked again: resolve by hand so that the saga ends
                    for step in failed:
                        await client.resolve(saga_id, step, reason="the kit settles it", by="kit")
            await asyncio.sleep(0.02)

    def _approval_timeout(self, step: str) -> Any:
        for candidate in self.saga.steps:
            if candidate.step_name == step and candidate.approval is not None:
                return approval_wait(candidate.approval.timeout)
        raise RuntimeError(f"step {step!r} awaits approval but declares none")

    async def _cancel(
        self, client: SagaClient, saga_id: str, step: str, refused: list[bool]
    ) -> None:
        await self.fakes.reached(saga_id, step, point="hanging")
        # Cancel once the other calls of the step's stage have answered and the saga has seen
        # it: the time-skipping test server refuses a workflow task that asks to cancel an
        # activity it has just completed (ACTIVITY_UNKNOWN), and the saga then stalls.
        while True:
            state = await _state(client, saga_id)
            others = [] if state is None else [s for s in state.steps if s.name != step]
            if state is not None and not any(s.status is StepStatus.RUNNING for s in others):
                break
            await asyncio.sleep(0.02)
        try:
            await client.cancel(saga_id, reason="cancelled by the kit", by="kit")
            refused.append(False)
        except SagaConflict:
            refused.append(True)
            self.fakes.release(saga_id, step)

    async def _restart(self, saga_id: str, steps: tuple[str, ...], workers: dict[str, Any]) -> None:
        for step in steps:
            await self.fakes.reached(saga_id, step, point="hanging")
        old = workers["worker"]
        stopping = asyncio.create_task(old.shutdown())
        await asyncio.sleep(0.2)  # the old worker stops polling; its running calls may answer
        for step in steps:
            self.fakes.release(saga_id, step)
        workers["tasks"].append(stopping)
        queue = old.config()["task_queue"]
        new = worker_for(self.env, [self.saga], task_queue=queue, fakes=self.fakes,
                         restartable=True)  # fmt: skip
        workers["worker"] = new
        workers["tasks"].append(asyncio.create_task(new.run()))

    async def _user_check(self, run: Run) -> list[str]:
        assert self.check is not None
        try:
            result = self.check(run)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            return [f"check: {exc}" if str(exc) else f"check: {type(exc).__name__}"]
        return []

    async def _settle(self, client: SagaClient, saga_id: str) -> None:
        """Leave no saga running: terminate one that is still open."""
        handle = client.client.get_workflow_handle(saga_id)
        with contextlib.suppress(Exception):
            description = await handle.describe()
            if description.status is not None and description.status.name == "RUNNING":
                await handle.terminate(reason="the testing kit ends an unsettled scenario")

    # ----------------------------------------------------------- the saga's shape

    def _shape(self, run: Run, awaited: list[str]) -> Shape:
        called = run.steps_called
        declared = {s.step_name: s for s in self.saga.steps}
        imperative = isinstance(self.saga, ImperativeSaga)
        stage_of: dict[str, int] = {}
        for index, group in enumerate(self.saga.groups):
            for step in group:
                stage_of[step.step_name] = index
        kinds: dict[str, StepKind] = {}
        for state in run.state.steps:
            kinds[state.name] = StepKind(state.kind)
        for position, name in enumerate(called):
            if name not in stage_of:  # imperative: one stage per step, in the order they ran
                stage_of[name] = len(self.saga.groups) + position
        has_undo = {name for name, s in declared.items() if s.compensate is not None}
        fallbacks = {name: activity_name(s.fallback) for name, s in declared.items() if s.fallback}
        endless = {
            name
            for name, s in declared.items()
            if not s.retry_policy.maximum_attempts and s.schedule_to_close is None
        }
        return Shape(
            steps=tuple(called),
            stage_of=stage_of,
            kinds={s: kinds.get(s, StepKind.COMPENSATABLE) for s in called},
            has_undo=frozenset(has_undo & set(called)),
            approvals=tuple(dict.fromkeys(awaited)),
            endless=frozenset(endless & set(called)),
            imperative=imperative,
            optional=frozenset(n for n, s in declared.items() if s.optional and n in called),
            fallbacks={n: f for n, f in fallbacks.items() if n in called},
            fallback_undo=frozenset(
                n for n, s in declared.items() if s.fallback_compensate and n in called
            ),
            local=frozenset(c.step for c in run.calls if c.local and c.phase == FORWARD),
        )

    def _describe(self, run: Run) -> None:
        """Give a run what the rules need to know about the saga's shape."""
        shape = self.shape
        if shape is None:
            return
        run.stage_of = dict(shape.stage_of)
        for step in run.steps_called:
            run.stage_of.setdefault(step, max(run.stage_of.values(), default=0) + 1)
        run.has_undo = shape.has_undo | {
            c.step for c in run.calls if c.phase == COMPENSATION and not c.fallback
        }
        run.fallback_undo = shape.fallback_undo | {
            c.step for c in run.calls if c.phase == COMPENSATION and c.fallback
        }
        run.fallbacks = dict(shape.fallbacks)
        run.pivot = shape.pivot
        run.retriable = frozenset(s for s, k in shape.kinds.items() if k is StepKind.RETRIABLE)


def _undid(run: Run, step: str, fallback: bool) -> bool:
    """Whether the saga's compensation undid that activity of ``step`` (a failed optional
    step's own undo does not count: its failing does not park the saga)."""
    if run.failed_optional(step):
        return False
    return any(c.outcome == "succeeded" for c in run.undos(step, fallback))


def _status(outcome: _Outcome) -> SagaStatus:
    assert outcome.run is not None
    return outcome.run.state.status


async def _state(client: SagaClient, saga_id: str) -> SagaState | None:
    """The saga's state, or None when it cannot answer yet. A query handed to a worker that
    is shutting down (a restart scenario) is never answered: ask again rather than wait."""
    try:
        async with asyncio.timeout(QUERY_TIMEOUT):
            return await client.state(saga_id)
    except (SagaNotFound, TimeoutError):
        return None
    except Exception as exc:
        # The first workflow task may not have run yet: its query has nothing to answer.
        if "query" in str(exc).lower() or "not" in str(exc).lower():
            return None
        raise
