"""The API accept-rate measurement: an open-loop generator against `uwf serve`.

Open loop: request i is due at ``start + i / rate`` whatever happened to the others (closed-loop
workers would wait for an answer before sending again, and a slow server would quietly lower
the load it gets). Each 202's latency counts from the request's *scheduled* send time, so a
request the generator or the connection pool could only send late is charged for the wait
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
from _processes import TICKETS, Child
from _report import Accept, percentile

FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
PENDING = ("queued", "running")


async def _post(
    session: aiohttp.ClientSession, url: str, ticket: int
) -> tuple[str | None, str | None]:
    """(execution id, None) on a 202; (None, what went wrong) otherwise."""
    body = {"workflow": "escalate_case", "input": {"case_id": ticket, "priority": "P2"}}
    try:
        async with session.post(url, json=body) as response:
            data: dict[str, Any] = await response.json(content_type=None)
            if response.status == 202 and "id" in data:
                return str(data["id"]), None
            return None, str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, type(exc).__name__


async def _pending(session: aiohttp.ClientSession, base: str) -> bool:
    for status in PENDING:
        url = f"{base}/v1/tenants/acme/executions"
        async with session.get(url, params={"status": status, "limit": 1}) as response:
            response.raise_for_status()
            if (await response.json())["items"]:
                return True
    return False


async def _drain(session: aiohttp.ClientSession, base: str, limit: float) -> float | None:
    """When no execution was queued or running any more (perf_counter), None after `limit` s."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if not await _pending(session, base):
            return time.perf_counter()
        await asyncio.sleep(0.25)
    return None


async def _statuses(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    """Every execution of tenant acme, id → status (200 a page)."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        url = f"{base}/v1/tenants/acme/executions"
        async with session.get(url, params=params) as response:
            response.raise_for_status()
            page = await response.json()
        found.update({item["id"]: item["status"] for item in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def accept_rate(
    base: str, key: str, serve: Child, rate: float, seconds: float, drain_limit: float
) -> Accept:
    """Post `rate` escalate_case actions a second for `seconds` without waiting, then drain."""
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base}/v1/tenants/acme/actions"  # no ?wait: the API answers 202 once stored
    n = round(rate * seconds)
    latencies: list[float] = []
    ids: list[str] = []
    errors: Counter[str] = Counter()
    lag_max = 0.0
    last_answer = 0.0
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        # Warm-up, unmeasured: connections, first-call imports, the metadata cache.
        await asyncio.gather(*(_post(session, url, TICKETS[i]) for i in range(20)))
        await _drain(session, base, 60.0)

        cpu_before = serve.cpu_seconds()
        start = time.perf_counter() + 0.05

        async def one(i: int, due: float) -> None:
            nonlocal last_answer
            execution, error = await _post(session, url, TICKETS[i % len(TICKETS)])
            now = time.perf_counter()
            if execution is None:
                errors[error or "?"] += 1
                return
            ids.append(execution)
            latencies.append((now - due) * 1000)
            last_answer = max(last_answer, now)

        tasks = []
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag_max = max(lag_max, time.perf_counter() - due)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)

        drained_at = await _drain(session, base, drain_limit)
        cpu = serve.cpu_seconds() - cpu_before
        statuses = await _statuses(session, base)

    final = Counter(statuses.get(i, "missing") for i in ids)
    lost = sum(v for k, v in final.items() if k not in FINAL)
    latencies.sort()
    span = (last_answer - start) if ids else 0.0
    return Accept(
        rate=rate,
        seconds=seconds,
        scheduled=n,
        accepted=len(ids),
        errors=dict(errors),
        send_lag_max_ms=round(lag_max * 1000, 2),
        achieved_rate=round(len(ids) / span, 1) if span > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=round(latencies[-1], 2) if latencies else None,
        drain_s=None if drained_at is None else round(drained_at - last_answer, 2),
        drain_limit_s=drain_limit,
        final={k: v for k, v in sorted(final.items()) if k in FINAL},
        lost=lost,
        serve_cpu_ms=round(cpu * 1000 / max(1, n), 3),
    )
