"""The durable executor: claims due executions from the Pipe DB and runs them.

Executions are the queue (DESIGN decision 1). A worker claims a batch with a lease, renews the
leases of what it holds with a heartbeat, and runs each execution through the interpreter. If a
worker dies, its leases expire and any worker resumes its executions after the last recorded step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog

from uwf.auth import SecretResolver, SecretSources, TokenManager, Vault, VaultKvClient
from uwf.connectors import NetworkPolicy
from uwf.connectors.runtime import ConnectorRuntime
from uwf.engine._interpreter import Interpreter
from uwf.engine._probe import probe_connection
from uwf.engine._targets import TargetResolver
from uwf.governor import Governor, open_state
from uwf.metadata import ConnectionSpec
from uwf.store import Execution, LeaseLostError, StepRun, Store, new_id, utcnow

__all__ = ["AcceptTicket", "Executor"]

log = structlog.get_logger("uwf.engine")

# An execution whose run crashed this many times is dead-lettered instead of tried again.
MAX_CRASHES = 5

# How many finished executions a worker keeps at hand for callers waiting in its process.
RECENT_RESULTS = 512

# The longest an in-process worker holds back (claiming, starting an execution) while the API
# of its process is accepting actions: the API goes first, the worker is never starved.
API_PRIORITY_SECONDS = 0.2


class AcceptTicket:
    """An action being accepted by the API of the worker's process; `release` when stored."""

    __slots__ = ("_executor", "_held")

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._held = True
        executor._accepting += 1
        executor._accepts_idle.clear()

    def release(self) -> None:
        """Idempotent: the route releases it before waiting for the result, the API after."""
        if self._held:
            self._held = False
            self._executor._accepting -= 1
            if not self._executor._accepting:
                self._executor._accepts_idle.set()


class Executor:
    """Runs executions from the Pipe DB until stopped.

    Example:
        executor = Executor(store, secrets=resolver, sandbox_url=lambda crm: None)
        await executor.start()
        ...
        await executor.stop()
    """

    def __init__(
        self,
        store: Store,
        *,
        secrets: SecretResolver,
        sandbox_url: Callable[[str], str | None],
        vault: Vault | None = None,
        policy: NetworkPolicy | None = None,
        kv: VaultKvClient | None = None,
        concurrency: int = 16,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        governor: Governor | None = None,
    ) -> None:
        self.store = store
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[-8:]}"
        self.runtime = ConnectorRuntime(policy)
        self.tokens = TokenManager(store.tokens, vault, self.runtime.session_for) if vault else None
        self.sources = SecretSources(secrets, secrets=store.secrets, vault=vault, kv=kv)
        self.targets = TargetResolver(secrets, sandbox_url, self.tokens, self.sources)
        # Budgets hold across processes when their state is shared (Redis or PostgreSQL).
        self.governor = governor or Governor(open_state(None, store.engine))
        self._interpreter = Interpreter(
            store, self.runtime, self.targets, self.governor, vault=vault, pace=self._defer_to_api
        )
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._finished: dict[str, asyncio.Event] = {}
        # The last executions this worker finished, as stored: a caller waiting on one of them
        # in this process gets it without reading it back (bounded; older ones are read).
        self._recent: OrderedDict[str, tuple[Execution, list[StepRun]]] = OrderedDict()
        # Actions the API of this process is accepting right now (see `accepting`).
        self._accepting = 0
        self._accepts_idle = asyncio.Event()
        self._accepts_idle.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="uwf-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="uwf-heartbeat"),
        ]
        log.info("worker started", owner=self.owner, concurrency=self._concurrency)

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop claiming, give running executions `drain_seconds` to finish, then let go.

        What does not finish keeps its ledger; its lease expires and a worker resumes it.
        """
        self._stopping.set()
        self._wake.set()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=drain_seconds)
        unfinished = list(self._inflight)
        for task in [*self._inflight.values(), *self._loops]:
            task.cancel()
        for task in [*self._inflight.values(), *self._loops]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if unfinished:
            # Hand them over now rather than when the leases expire. A step cut short stays
            # `sending` in the ledger, so the next worker checks before sending it again.
            with contextlib.suppress(Exception):
                await self.store.release(self.owner, unfinished)
            log.info("released unfinished executions", count=len(unfinished))
        await self.runtime.close()
        await self.governor.close()
        await self.sources.close()
        log.info("worker stopped", owner=self.owner)

    async def probe(self, version: int, connection: ConnectionSpec) -> dict[str, Any]:
        """Test one connection: authenticate, one cheap call, a report in plain words."""
        bundle = await self.store.metadata(version)
        assert bundle is not None
        return await probe_connection(self.runtime, self.targets, version, bundle, connection)

    def accepting(self) -> AcceptTicket:
        """The API of this process starts accepting an action: until the ticket is released,
        this worker claims nothing and starts no execution (for at most
        `API_PRIORITY_SECONDS`), so that a `202` does not queue behind execution work for the
        one event loop and the one SQLite connection they share."""
        return AcceptTicket(self)

    async def _defer_to_api(self) -> None:
        if self._accepting and not self._stopping.is_set():
            # Each waiter gives up at its own moment: held executions that all resumed at once
            # would run as one burst and hold the next `202`s for tens of milliseconds.
            hold = API_PRIORITY_SECONDS * random.uniform(0.25, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._accepts_idle.wait(), hold)

    def wake(self) -> None:
        """Something was enqueued: look now rather than at the next poll."""
        self._wake.set()

    async def wait_for(self, execution_id: str, seconds: float) -> Execution | None:
        """Wait until the execution is final (or `seconds` pass); returns its latest state."""
        execution, _runs = await self.wait_for_result(execution_id, seconds)
        return execution

    async def wait_for_result(
        self, execution_id: str, seconds: float
    ) -> tuple[Execution | None, list[StepRun] | None]:
        """Like `wait_for`, with the ledger too when this worker finished the execution."""
        deadline = time.monotonic() + seconds
        event = self._finished.setdefault(execution_id, asyncio.Event())
        try:
            while True:
                if execution_id in self._recent:
                    return self._recent[execution_id]
                remaining = deadline - time.monotonic()
                # This worker signals at once; another process's worker is seen by reading.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(max(remaining, 0), 1.0))
                if execution_id in self._recent:
                    return self._recent[execution_id]
                execution = await self.store.get_execution(execution_id)
                if execution_id in self._recent:  # finished while it was being read
                    return self._recent[execution_id]
                if execution is None or execution.is_final or time.monotonic() >= deadline:
                    return execution, None
        finally:
            self._finished.pop(execution_id, None)

    async def run_until_idle(self, seconds: float = 60.0) -> None:
        """Claim and run until nothing is due (for one-off runs and tests)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            claimed = await self.store.claim(self.owner, self._concurrency, self._lease_seconds)
            if claimed:
                await asyncio.gather(*(self._run(e) for e in claimed))
                continue
            if not await self._has_pending():
                return
            await asyncio.sleep(min(self._poll_interval, 0.2))

    async def _has_pending(self) -> bool:
        page, _ = await self.store.list_executions(status="running", limit=1)
        queued, _ = await self.store.list_executions(status="queued", limit=1)
        return bool(page or queued)

    # -- loops ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            await self._defer_to_api()
            free = self._concurrency - len(self._inflight)
            claimed: list[Execution] = []
            if free > 0:
                try:
                    claimed = await self.store.claim(self.owner, free, self._lease_seconds)
                except Exception:
                    log.exception("claim failed; retrying")
                    await asyncio.sleep(self._poll_interval)
                    continue
            for execution in claimed:
                task = asyncio.create_task(self._run(execution), name=f"uwf-{execution.id}")
                self._inflight[execution.id] = task
                task.add_done_callback(functools.partial(self._done, execution.id))
            if claimed and len(claimed) == free:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)

    def _done(self, execution_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(execution_id, None)
        if not self._stopping.is_set():
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        interval = self._lease_seconds / 3
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            try:
                asked = list(self._inflight)
                held = await self.store.extend_leases(self.owner, asked, self._lease_seconds)
            except Exception:
                log.exception("heartbeat failed")
                continue
            # An execution that finished meanwhile is not lost; one still running is.
            for lost in (set(asked) - held) & set(self._inflight):
                log.warning("lease lost", execution_id=lost)

    async def _after_crash(self, execution: Execution, exc: Exception) -> None:
        message = f"internal error: {type(exc).__name__}: {exc}"[:1000]
        # Crashes in a row, kept with the error: claims also count retries and throttling.
        previous = execution.error or {}
        crashes = int(previous.get("crashes", 0)) + 1 if previous.get("type") == "internal" else 1
        error = {"type": "internal", "message": message, "crashes": crashes}
        try:
            if crashes >= MAX_CRASHES:
                await self.store.finish(execution.id, self.owner, "dead", error=error)
            else:
                due = utcnow() + timedelta(seconds=2**crashes)
                await self.store.reschedule(execution.id, self.owner, due, error)
        except Exception:
            log.exception("could not record the crash", execution_id=execution.id)

    async def _run(self, execution: Execution) -> None:
        bound = log.bind(
            execution_id=execution.id, tenant=execution.tenant, workflow=execution.workflow
        )
        try:
            await self._defer_to_api()
            status = await self._interpreter.run(execution, self.owner)
            bound.info("execution advanced", status=status)
        except LeaseLostError:
            bound.warning("lease lost; another worker owns the execution now")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or an outage of the Pipe DB, not a CRM error: try again a little later,
            # and dead-letter the execution (payload kept) rather than loop on it for ever.
            bound.exception("execution crashed")
            await self._after_crash(execution, exc)
        finally:
            result = self._interpreter.finished.pop(execution.id, None)
            if result is not None:
                self._recent[execution.id] = result
                while len(self._recent) > RECENT_RESULTS:
                    self._recent.popitem(last=False)
            event = self._finished.get(execution.id)
            if event is not None:
                event.set()
