"""Chaos suites: the whole stack in real processes, broken while sagas run.

Each suite starts sagas of both shipped types over REST, breaks something on the way (kill -9
of a worker, of the API, of the Temporal server; transient faults and refusals at the
participants; the saga store's PostgreSQL stopped), waits for every saga to end, and judges
the outcome with the consistency checker (participants/checker.py): what each saga says it
did must be what the participants hold. No suite looks at timings.

The short forms of the crash and store suites run in ``make test``; the long forms, and the
short forms of the suites whose faults the in-process tests also cover (transient faults:
tests/test_execution_rules.py, tests/test_demo_sagas.py; participant outages and circuits:
tests/test_outages.py), run on demand (``make chaos``, marked slow), which keeps ``make test``
near ten minutes. docs/reliability.md quotes the long forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine import SagaClient, SagaState, SagaStatus
from tests.support.load import Run, final_states, judge, mix, start_all
from tests.support.postgres import create_database, running_cluster
from tests.support.processes import free_port
from tests.support.stack import Stack, running_stack

pytestmark = [pytest.mark.temporal, pytest.mark.chaos]

#: How a saga may end with nobody's help: completed, compensated, or failed (refused at its
#: first step, so nothing to compensate). Parked (compensation_failed) needs a person.
ENDINGS = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}


@dataclass(frozen=True)
class Size:
    sagas: int
    rate: float  # sagas started per second
    kills: int = 0  # worker kills (crash suite)
    outage: float = 0  # seconds a component is down

    @property
    def patience(self) -> float:
        """How long the suite waits for every saga to end once the starts are done: the
        long forms run a thousand sagas through faults on two busy cores."""
        return 240 + 1.5 * self.sagas

    def __str__(self) -> str:
        return f"{self.sagas}-sagas"


def sizes(short: Size, long: Size, *, short_on_demand: bool = False) -> pytest.MarkDecorator:
    """The suite's two forms; the long one, and with ``short_on_demand`` both, marked slow."""
    quick = pytest.param(short, marks=[pytest.mark.slow] if short_on_demand else [])
    return pytest.mark.parametrize(
        "size", [quick, pytest.param(long, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])],
        ids=str,
    )  # fmt: skip


async def client_of(stack: Stack) -> SagaClient:
    return await SagaClient.connect(stack.temporal.address, task_queue="chaos")


async def restart(stack: Stack, name: str) -> None:
    stack.kill(name)
    await asyncio.to_thread(stack.start, name)


async def break_while_starting(stack: Stack, *, span: float, worker_kills: int) -> None:
    """Within the ``span`` seconds the starts take: kill -9 the worker at random moments, the
    API at half-time and the Temporal server at two thirds (each started again at once)."""
    rng = random.Random(11)
    events = [(rng.uniform(0.05, 0.95) * span, "worker") for _ in range(worker_kills)]
    events += [(0.5 * span, "api"), (0.7 * span, "temporal")]
    begin = asyncio.get_running_loop().time()
    for at, name in sorted(events):
        await asyncio.sleep(max(0.0, begin + at - asyncio.get_running_loop().time()))
        if name == "temporal":
            stack.temporal.kill()
            await asyncio.sleep(1)
            await asyncio.to_thread(stack.temporal.start)
            await restart(stack, "worker")  # a worker that lived through the outage is fine,
            # but one killed now must find Temporal back: both paths are exercised
        else:
            await restart(stack, name)


@sizes(Size(16, rate=4, kills=1), Size(400, rate=5, kills=10))
async def test_crashes_lose_nothing_and_duplicate_nothing(tmp_path: Path, size: Size) -> None:
    """Workers killed -9 at random moments, the API killed mid-request, the Temporal server
    killed -9 and restarted: every saga ends, once, and agrees with the participants."""
    inputs = mix(size.sagas, refusals=0.1, seed=size.sagas)
    with running_stack(tmp_path) as stack:
        run = Run()
        load = asyncio.create_task(start_all(stack.api_url, inputs, rate=size.rate, run=run))
        await break_while_starting(stack, span=size.sagas / size.rate, worker_kills=size.kills)
        await load
        sagas = await client_of(stack)
        states = await final_states(sagas, list(run.ids.values()), timeout=size.patience)
        verdict = await judge(states, stack.participants_url)
        started = (await sagas.client.count_workflows()).count

    print(f"crashes: {size.kills + 1} worker kills, 1 API kill, 1 Temporal kill; "
          f"{run.retried_starts} starts retried; {verdict}")  # fmt: skip
    assert len(run.ids) == size.sagas
    assert run.duplicates == 0
    assert started == size.sagas, "a retried start booked a second saga"
    assert verdict.mismatches == [], str(verdict)
    assert set(verdict.statuses) <= ENDINGS, str(verdict)


@sizes(Size(24, rate=8), Size(1000, rate=15), short_on_demand=True)
async def test_transient_faults_and_refusals_end_by_the_rules(tmp_path: Path, size: Size) -> None:
    """20 % of participant calls fail transiently, 10 % of the sagas are refused: every saga
    ends in a status the rules allow, and the checker finds nothing out of place."""
    inputs = mix(size.sagas, refusals=0.1, seed=size.sagas)
    with running_stack(tmp_path, SAGAS_PARTICIPANTS_FAULT_RATE="0.2") as stack:
        run = await start_all(stack.api_url, inputs, rate=size.rate, run=Run())
        sagas = await client_of(stack)
        states = await final_states(sagas, list(run.ids.values()), timeout=size.patience)
        verdict = await judge(states, stack.participants_url)

    print(f"faults: {size.sagas} sagas, 20 % transient faults, 10 % refused; {verdict}")
    assert verdict.mismatches == [], str(verdict)
    assert set(verdict.statuses) <= ENDINGS | {SagaStatus.COMPENSATION_FAILED}, str(verdict)
    # A refused saga compensates; only a saga whose steps all met a fault 5 times in a row
    # compensates among the good ones (0.2 ** 5 per step), so most complete.
    assert verdict.statuses.get(SagaStatus.COMPLETED, 0) >= 0.8 * size.sagas, str(verdict)


@sizes(Size(16, rate=4, outage=5), Size(200, rate=5, outage=30))
async def test_sagas_go_on_while_the_store_is_down(tmp_path: Path, size: Size) -> None:
    """The saga store's PostgreSQL stopped mid-run: sagas already started go on (Temporal
    holds them), starts are refused meanwhile (5xx, retried by the client with its key), and
    once the database is back the store catches up with every saga's final status."""
    inputs = mix(size.sagas, refusals=0.1, seed=size.sagas)
    with running_cluster(free_port()) as database:
        url = create_database(database.url, "chaos")
        with running_stack(tmp_path, database_url=url) as stack:
            run = Run()
            load = asyncio.create_task(start_all(stack.api_url, inputs, rate=size.rate, run=run))
            await asyncio.sleep(size.sagas / size.rate / 3)
            await asyncio.to_thread(database.stop)
            await asyncio.sleep(size.outage)
            await asyncio.to_thread(database.start)
            await load
            sagas = await client_of(stack)
            states = await final_states(sagas, list(run.ids.values()), timeout=size.patience)
            verdict = await judge(states, stack.participants_url)
            lagging = await store_lag(stack.api_url, states, timeout=60)

    print(f"store down {size.outage:.0f} s: {run.retried_starts} starts retried; {verdict}")
    assert len(run.ids) == size.sagas
    assert run.duplicates == 0
    assert verdict.mismatches == [], str(verdict)
    assert set(verdict.statuses) <= ENDINGS, str(verdict)
    assert lagging == [], f"the store never caught up with {len(lagging)} sagas: {lagging[:5]}"


async def store_lag(api_url: str, states: list[SagaState], *, timeout: float) -> list[str]:
    """The sagas whose status in the store is not yet their final one.

    Read from the list (``GET /sagas``), which only reads the store: ``GET /sagas/{id}``
    would fetch a saga the store lacks from Temporal and so hide a store that lags.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    expected = {s.id: str(s.status) for s in states}
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        while True:
            stored: dict[str, str] = {}
            cursor = None
            with contextlib.suppress(httpx.HTTPError):
                while True:
                    params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                    page = (await http.get("/sagas", params=params)).raise_for_status().json()
                    stored |= {item["id"]: item["status"] for item in page["items"]}
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
            behind = sorted(i for i, status in expected.items() if stored.get(i) != status)
            if not behind or loop.time() > deadline:
                return behind
            await asyncio.sleep(1)


@sizes(Size(16, rate=4, outage=8), Size(400, rate=8, outage=30), short_on_demand=True)
async def test_an_outage_of_the_participants_costs_time_not_outcomes(
    tmp_path: Path, size: Size
) -> None:
    """Every participant down (killed -9, started again after the outage) while sagas run:
    the workers' circuits open, sagas wait instead of spending their retries, the circuits
    close when the participants are back, and every saga completes: none compensated because
    of the outage, none parked."""
    inputs = mix(size.sagas, refusals=0.0, seed=size.sagas)
    metrics_port = free_port()
    # The short form with a 2 s cool-down: the circuits open and close several times in its
    # outage (the long form keeps the default 10 s).
    cooldown = {"SAGAS_CIRCUIT_COOLDOWN_SECONDS": "2"} if size.sagas < 100 else {}
    with running_stack(tmp_path, SAGAS_WORKER_METRICS_PORT=str(metrics_port), **cooldown) as stack:
        run = Run()
        load = asyncio.create_task(start_all(stack.api_url, inputs, rate=size.rate, run=run))
        await asyncio.sleep(size.sagas / size.rate / 3)
        stack.kill("participants")
        await asyncio.sleep(size.outage)
        await asyncio.to_thread(stack.start, "participants")
        await load
        sagas = await client_of(stack)
        states = await final_states(sagas, list(run.ids.values()), timeout=size.patience)
        verdict = await judge(states, stack.participants_url)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        worker_log = stack.logs("worker")

    opened = worker_log.count('"circuit open"')
    closed = worker_log.count('"circuit closed"')
    print(f"outage {size.outage:.0f} s: {size.sagas} sagas; circuits opened {opened} times, "
          f"closed {closed} times; {verdict}")  # fmt: skip
    assert verdict.mismatches == [], str(verdict)
    spoiled = [
        f"{s.id}: {s.error}; "
        + ", ".join(f"{t.name} {t.status} x{t.attempts} ({t.error})" for t in s.steps)
        for s in states
        if s.status is not SagaStatus.COMPLETED
    ]
    assert spoiled == [], "\n".join(spoiled)
    assert opened >= 1, "no circuit opened during the outage"
    assert closed >= 1, "no circuit closed after the outage"
    circuit = [line for line in metrics.splitlines() if line.startswith("sagas_circuit_state{")]
    assert circuit, "the worker exports no sagas_circuit_state"
    assert all(float(line.split()[-1]) == 0 for line in circuit), circuit
