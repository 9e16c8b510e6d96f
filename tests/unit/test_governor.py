"""The governor's decisions, with its in-memory state."""

from __future__ import annotations

import asyncio
import time

import pytest

from uwf.connectors import LimitsSpec, RateLimitHeadersSpec
from uwf.governor import Governor, LocalState

HEADERS = RateLimitHeadersSpec(remaining="X-Remaining", reset="X-Reset")


@pytest.fixture
def governor() -> Governor:
    return Governor(LocalState())


async def test_a_window_admits_its_budget_then_says_how_long_to_wait(governor: Governor) -> None:
    limits = LimitsSpec(requests=3, window_seconds=60)
    admitted = [await governor.admit("c", limits) for _ in range(4)]
    assert [a.wait for a in admitted[:3]] == [0, 0, 0]
    assert 0 < admitted[3].wait <= 60
    assert admitted[3].reason == "budget of 3 requests per 60 s used"
    assert (await governor.admit("other", limits)).wait == 0  # connections are independent


async def test_a_429_pauses_the_connection_for_retry_after(governor: Governor) -> None:
    limits = LimitsSpec()
    await governor.observe("c", limits, HEADERS, 429, {}, retry_after=12)
    paused = await governor.admit("c", limits)
    assert 11 < paused.wait <= 12
    assert paused.reason == "the CRM answered 429; retry in 12 s"
    assert (await governor.admit("d", limits)).wait == 0


@pytest.mark.parametrize(
    ("headers_spec", "reset", "expected"),
    [
        (HEADERS, "30", 30),
        (
            RateLimitHeadersSpec(remaining="X-Remaining", reset="X-Reset", reset_format="unix"),
            "+20",
            20,
        ),  # a Unix time 20 s from now, computed in the test
        (RateLimitHeadersSpec(remaining="X-Remaining"), None, 60),  # no reset: a window
    ],
)
async def test_a_budget_reported_used_up_pauses_until_its_reset(
    governor: Governor, headers_spec: RateLimitHeadersSpec, reset: str | None, expected: float
) -> None:
    if reset is not None and reset.startswith("+"):
        reset = str(int(time.time()) + int(reset))
    headers = {"x-remaining": "0", **({"X-Reset": reset} if reset else {})}
    await governor.observe("c", LimitsSpec(), headers_spec, 200, headers)
    wait = (await governor.admit("c", LimitsSpec())).wait
    assert expected - 2 < wait <= expected
    await governor.observe("d", LimitsSpec(), headers_spec, 200, {"x-remaining": "5"})
    assert (await governor.admit("d", LimitsSpec())).wait == 0


async def test_the_breaker_opens_after_failures_and_closes_on_success(governor: Governor) -> None:
    limits = LimitsSpec(breaker_failures=3, breaker_open_seconds=0.2)
    for status in (503, None, 500):
        assert (await governor.admit("c", limits)).wait == 0
        await governor.observe("c", limits, HEADERS, status, {})
    opened = await governor.admit("c", limits)
    assert 0 < opened.wait <= 0.2
    assert opened.reason == "circuit breaker open after 3 failures in a row"
    await asyncio.sleep(0.25)
    assert (await governor.admit("c", limits)).wait == 0  # half open: one probe may go
    await governor.observe("c", limits, HEADERS, 200, {})
    await governor.observe("c", limits, HEADERS, 503, {})
    assert (await governor.admit("c", limits)).wait == 0  # one failure after a success


async def test_slots_bound_concurrency(governor: Governor) -> None:
    limits = LimitsSpec(max_concurrency=2)
    running = peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with governor.slot("c", limits):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1

    await asyncio.gather(*(call() for _ in range(8)))
    assert peak == 2


async def test_a_daily_quota(governor: Governor) -> None:
    limits = LimitsSpec(daily=2)
    waits = [(await governor.admit("c", limits)).wait for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert waits[2] > 0
