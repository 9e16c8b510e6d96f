"""The governor's decisions on every state back end (memory, PostgreSQL, Redis), with a clock
the test moves: budgets that hold over any sliding window, concurrency shared by workers,
pauses, pacing and the circuit breaker."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest

from tests.governor_states import Backend, Clock, backend, redis_server  # noqa: F401 - fixtures
from uwf.connectors import LimitsSpec, RateLimitHeadersSpec
from uwf.governor import Governor

MIDNIGHT = 1_800_057_600.0  # a UTC midnight
HEADERS = RateLimitHeadersSpec(remaining="X-Remaining", reset="X-Reset", limit="X-Limit")


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside one half-open interval [t, t + window)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


async def run_arrivals(
    workers: list[Governor], clock: Clock, limits: LimitsSpec, arrivals: list[float]
) -> list[float]:
    """Requests queue up at their arrival times and go in order, each through one of the
    workers in turn; a refused one asks again after the wait it was told, as the engine does.

    Returns the times at which requests were admitted.
    """
    admitted: list[float] = []
    for i, arrival in enumerate(sorted(arrivals)):
        clock.now = max(clock.now, arrival)
        while (admission := await workers[i % len(workers)].admit("c", limits)).wait > 0:
            clock.advance(admission.wait)
        admitted.append(clock.now)
    return admitted


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_sliding_window_ever_holds_more_than_the_budget(
    backend: Backend,  # noqa: F811 - the fixture
    seed: int,
) -> None:
    rng = random.Random(seed)
    clock = Clock()
    budget, window = rng.choice([(7, 1.0), (20, 10.0), (60, 60.0)])
    limits = LimitsSpec(requests=budget, window_seconds=window)
    workers = [Governor(backend.state(), clock=clock), Governor(backend.state(), clock=clock)]
    # Bursts and lulls over five windows: a burst of up to twice the budget at a random
    # moment, then single requests at random gaps.
    arrivals, t = [], clock.now
    while t < clock.now + 5 * window:
        if rng.random() < 0.2:
            arrivals += [t] * rng.randint(1, 2 * budget)
        else:
            arrivals.append(t)
        t += rng.expovariate(budget / window) * rng.choice([0.1, 0.5, 1, 3])
    admitted = await run_arrivals(workers, clock, limits, arrivals)
    assert len(admitted) == len(arrivals)  # every request went, in the end
    assert most_in_any_window(admitted, window) <= budget


async def test_under_saturation_nearly_the_whole_budget_is_used(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    limits = LimitsSpec(requests=40, window_seconds=10)
    workers = [Governor(backend.state(), clock=clock), Governor(backend.state(), clock=clock)]
    start = clock.now
    # Ten times the budget's rate asks: more than seven windows' worth queue up within the
    # first one (the queue is never empty, so every refusal is the budget's doing).
    arrivals = [start + i * 10 / 400 for i in range(7 * 40)]
    admitted = await run_arrivals(workers, clock, limits, arrivals)
    in_six_windows = [t for t in admitted if t < start + 60]
    assert most_in_any_window(admitted, 10) <= 40
    assert len(in_six_windows) >= 0.9 * 6 * 40


async def test_a_refusal_says_how_long_to_wait(backend: Backend) -> None:  # noqa: F811
    clock = Clock()
    governor = Governor(backend.state(), clock=clock)
    limits = LimitsSpec(requests=3, window_seconds=60)
    assert (await governor.admit("c", limits)).wait == 0
    # A budget this small goes one request at a time, evenly spread: one every 20 s.
    refused = await governor.admit("c", limits)
    assert refused.wait == pytest.approx(20)
    assert refused.reason == "budget of 3 requests per 60 s used"
    assert (await governor.admit("other", limits)).wait == 0  # connections are independent
    clock.advance(refused.wait)
    assert (await governor.admit("c", limits)).wait == 0  # the wait was enough


async def test_two_workers_never_exceed_the_concurrency_limit(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    workers = [Governor(backend.state(), clock=clock), Governor(backend.state(), clock=clock)]
    limits = LimitsSpec(max_concurrency=3)
    in_flight = peak = done = refusals = 0
    waiting = 12

    async def request(governor: Governor) -> None:
        nonlocal in_flight, peak, done, refusals, waiting
        while (admission := await governor.admit("c", limits)).wait > 0:
            assert admission.reason == "all 3 concurrent requests in flight"
            refusals += 1
            await asyncio.sleep(0.005)
        waiting -= 1
        async with governor.slot("c", limits, admission):
            in_flight += 1
            peak = max(peak, in_flight)
            # Hold the slot until the limit binds (or nobody else wants one): how long a
            # database round trip takes must not decide whether three ever run at once.
            seen = refusals
            while in_flight < 3 and waiting and refusals - seen < 20:  # noqa: ASYNC110 - counters
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.005)
            in_flight -= 1
        done += 1

    await asyncio.gather(*(request(workers[i % 2]) for i in range(12)))
    assert done == 12
    assert peak == 3


async def test_a_dead_workers_slot_comes_back_after_its_lease(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    limits = LimitsSpec(max_concurrency=1)
    dying = Governor(backend.state(), clock=clock, lease_seconds=30)
    survivor = Governor(backend.state(), clock=clock, lease_seconds=30)
    taken = await dying.admit("c", limits)
    assert taken.wait == 0
    assert taken.lease is not None
    # The holder dies here: it never gives the slot back.
    clock.advance(29)
    assert (await survivor.admit("c", limits)).wait > 0
    clock.advance(2)
    admission = await survivor.admit("c", limits)
    assert admission.wait == 0
    async with survivor.slot("c", limits, admission):
        assert (await dying.admit("c", limits)).wait > 0
    assert (await dying.admit("c", limits)).wait == 0  # given back at once when done


async def test_a_request_refused_by_the_rate_keeps_no_slot_and_no_daily_count(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    governor = Governor(backend.state(), clock=clock)
    limits = LimitsSpec(requests=1, window_seconds=10, max_concurrency=1, daily=2)
    first = await governor.admit("c", limits)
    async with governor.slot("c", limits, first):
        pass
    refused = await governor.admit("c", limits)
    assert refused.reason == "budget of 1 requests per 10 s used"
    clock.advance(refused.wait)
    # Had the refusal kept the slot (its lease lasts 30 s) or a daily count, this would wait.
    second = await governor.admit("c", limits)
    assert second.wait == 0
    async with governor.slot("c", limits, second):
        pass
    clock.advance(refused.wait)
    daily = await governor.admit("c", limits)
    assert daily.reason == "daily quota of 2 used"


async def test_a_daily_quota_holds_until_the_next_utc_day(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock(MIDNIGHT - 100)
    governor = Governor(backend.state(), clock=clock)
    limits = LimitsSpec(daily=2)
    waits = [(await governor.admit("c", limits)).wait for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert waits[2] == pytest.approx(100)
    clock.advance(100)
    assert (await governor.admit("c", limits)).wait == 0


async def test_a_429_pauses_that_connection_for_every_worker_and_no_other(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    first, second = Governor(backend.state(), clock=clock), Governor(backend.state(), clock=clock)
    limits = LimitsSpec()
    await first.observe("c", limits, HEADERS, 429, {}, retry_after=12)
    paused = await second.admit("c", limits)
    assert paused.wait == pytest.approx(12)
    assert paused.reason == "the CRM answered 429; retry in 12 s"
    assert (await second.admit("d", limits)).wait == 0
    clock.advance(12)
    assert (await second.admit("c", limits)).wait == 0


@pytest.mark.parametrize(
    ("headers_spec", "headers", "expected"),
    [
        (HEADERS, {"x-remaining": "0", "X-Reset": "30"}, 30),
        (  # a Unix time 20 s from the test clock's now
            RateLimitHeadersSpec(remaining="X-Remaining", reset="X-Reset", reset_format="unix"),
            {"x-remaining": "0", "X-Reset": "1800000020"},
            20,
        ),
        (RateLimitHeadersSpec(remaining="X-Remaining"), {"x-remaining": "0"}, 60),  # a window
        (  # the IETF draft's headers, which Zendesk sends on some endpoints
            RateLimitHeadersSpec(remaining="X-Rate-Limit-Remaining"),
            {"ratelimit-remaining": "0", "ratelimit-reset": "7"},
            7,
        ),
    ],
)
async def test_a_budget_reported_used_up_pauses_until_its_reset(
    backend: Backend,  # noqa: F811 - the fixture
    headers_spec: RateLimitHeadersSpec,
    headers: dict[str, str],
    expected: float,
) -> None:
    clock = Clock()
    governor = Governor(backend.state(), clock=clock)
    await governor.observe("c", LimitsSpec(), headers_spec, 200, headers)
    assert (await governor.admit("c", LimitsSpec())).wait == pytest.approx(expected)
    await governor.observe("d", LimitsSpec(), headers_spec, 200, {"x-remaining": "50"})
    assert (await governor.admit("d", LimitsSpec())).wait == 0


async def test_a_low_remaining_budget_is_spread_until_the_reset(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    governor = Governor(backend.state(), clock=clock)
    limits = LimitsSpec(requests=100, window_seconds=10)
    # Plenty left: no pacing.
    await governor.observe("c", limits, HEADERS, 200, {"X-Remaining": "60", "X-Reset": "8"})
    assert (await governor.admit("c", limits)).wait == 0
    # 4 of 100 left for 8 s: one request every 2 s, not four at once and then a wall.
    admitted = []
    for _ in range(4):
        while (admission := await governor.admit("c", limits)).wait > 0:
            assert admission.reason == "pacing: the CRM reports 4 requests left for 8 s"
            clock.advance(admission.wait)
        admitted.append(clock.now)
        await governor.observe("c", limits, HEADERS, 200, {"X-Remaining": "4", "X-Reset": "8"})
    assert [round(b - a, 6) for a, b in itertools.pairwise(admitted)] == [2, 2, 2]


async def test_salesforce_reports_its_allocation_as_used_over_max(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock(MIDNIGHT - 3600)
    governor = Governor(backend.state(), clock=clock)
    spec = RateLimitHeadersSpec(limit="Sforce-Limit-Info")
    limits = LimitsSpec(daily=5000)
    headers = {"Sforce-Limit-Info": "api-usage=4990/5000"}
    await governor.observe("sf", limits, spec, 200, headers)
    # 10 calls left for the hour until the day ends: one every 6 minutes.
    paced = await governor.admit("sf", limits)
    assert paced.wait == pytest.approx(360)
    await governor.observe("sf", limits, spec, 200, {"Sforce-Limit-Info": "api-usage=5000/5000"})
    assert (await governor.admit("sf", limits)).wait == pytest.approx(3600)


async def test_the_breaker_opens_half_opens_and_closes() -> None:
    from uwf.governor import LocalState

    clock = Clock()
    governor = Governor(LocalState(), clock=clock)
    limits = LimitsSpec(breaker_failures=3, breaker_open_seconds=20)
    for status in (503, None, 500):
        assert (await governor.admit("c", limits)).wait == 0
        await governor.observe("c", limits, HEADERS, status, {})
    opened = await governor.admit("c", limits)
    assert opened.wait == pytest.approx(20)
    assert opened.reason == "circuit breaker open after 3 failures in a row"
    assert (await governor.admit("d", limits)).wait == 0  # other connections go on
    clock.advance(20)
    assert (await governor.admit("c", limits)).wait == 0  # half open: one probe goes
    waiting = await governor.admit("c", limits)  # ... and only one
    assert waiting.reason == "circuit breaker half open: waiting for the probe's answer"
    await governor.observe("c", limits, HEADERS, 503, {})  # the probe failed: open again
    assert (await governor.admit("c", limits)).wait == pytest.approx(20)
    clock.advance(20)
    assert (await governor.admit("c", limits)).wait == 0  # the next probe
    await governor.observe("c", limits, HEADERS, 200, {})  # succeeds: closed
    assert [(await governor.admit("c", limits)).wait for _ in range(3)] == [0, 0, 0]
    await governor.observe("c", limits, HEADERS, 503, {})
    assert (await governor.admit("c", limits)).wait == 0  # one failure after a success


async def test_a_breaker_opened_by_one_worker_stops_every_worker(
    backend: Backend,  # noqa: F811 - the fixture
) -> None:
    clock = Clock()
    failing, other = Governor(backend.state(), clock=clock), Governor(backend.state(), clock=clock)
    limits = LimitsSpec(breaker_failures=3, breaker_open_seconds=20)
    for status in (503, None, 500):
        assert (await failing.admit("c", limits)).wait == 0
        await failing.observe("c", limits, HEADERS, status, {})

    stopped = await other.admit("c", limits)
    assert stopped.wait == pytest.approx(20, abs=0.01)
    assert stopped.reason == "circuit breaker open after 3 failures in a row"
    assert (await other.admit("d", limits)).wait == 0  # other connections go on
    clock.advance(20)
    assert (await other.admit("c", limits)).wait == 0
