"""Run one claimed execution through its steps, writing the ledger as it goes.

The ledger is written before a request leaves (`sending`) and after its answer is known, so a
crash at any point leaves enough to resume: finished steps are never run again, and a step that
may have been sent is checked (`verify`) or re-sent only when sending twice is harmless.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from uwf.auth import Vault, VaultError, has_sensitive, redact, sensitive_values, unseal_sensitive
from uwf.connectors import LimitsSpec, OperationSpec
from uwf.connectors.runtime import ConnectorRuntime, Sent, Target
from uwf.engine._flow import Outcome, Walk, compiled_expression, compiled_value
from uwf.engine._lookups import LookupCache
from uwf.engine._targets import TargetResolver
from uwf.errors import (
    ConnectorError,
    ExpressionError,
    FatalError,
    OutcomeUnknownError,
    RetryableError,
    UwfError,
)
from uwf.governor import Governor, LocalState
from uwf.mapping import (
    ValueMap,
    document_fits,
    is_truthy,
)
from uwf.metadata import (
    STEP_OPERATION,
    ActionStep,
    MetadataBundle,
    RetrySpec,
    WorkflowSpec,
)
from uwf.store import Execution, StepRun, Store, utcnow

__all__ = ["Interpreter"]


class _Throttled(Exception):
    """The connection's budget says not now (raised by the gate before anything is sent)."""

    def __init__(self, wait: float, reason: str) -> None:
        super().__init__(reason)
        self.wait, self.reason = wait, reason


_STEP_INPUTS = ("record_id", "fields", "criteria", "body", "public", "owner_id")


class Interpreter:
    def __init__(
        self,
        store: Store,
        runtime: ConnectorRuntime,
        targets: TargetResolver,
        governor: Governor | None = None,
        vault: Vault | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._vault = vault
        # Awaited before each write to the Pipe DB and each CRM call: the in-process worker
        # lets its API accept actions first (`Executor.accepting`).
        self._pace = pace or _no_pause
        # Per execution being run: the literal sensitive input values to keep out of records.
        self._hidden: dict[str, tuple[str, ...]] = {}
        self._runtime = runtime
        self._targets = targets
        self._governor = governor or Governor(LocalState())
        self._cancel_requested: set[str] = set()
        self._lookups = LookupCache()
        # Ledger entries that need no transaction of their own (skipped steps): they are
        # written with the next entry, or with the execution's end.
        self._pending: dict[str, list[StepRun]] = {}
        # Every ledger entry of the executions in progress, so that a finished execution can be
        # handed to whoever waits for it in this process without reading it back.
        self._runs: dict[str, dict[str, StepRun]] = {}
        self.finished: dict[str, tuple[Execution, list[StepRun]]] = {}

    def _hide(self, execution_id: str, value: Any) -> Any:
        """`value` as the Pipe DB may keep it: no secret, no sensitive input value."""
        return redact(value, self._hidden.get(execution_id, ()))

    def _hidden_runs(self, execution_id: str, runs: list[StepRun]) -> list[StepRun]:
        for run in runs:
            run.request = self._hide(execution_id, run.request)
            run.response = self._hide(execution_id, run.response)
            run.error = self._hide(execution_id, run.error)
            run.output = self._hide(execution_id, run.output)
        return runs

    async def _save(self, execution_id: str, owner: str, run: StepRun) -> None:
        """Write the ledger entry; note a cancellation someone asked for meanwhile."""
        await self._pace()
        runs = [r for r in self._pending.pop(execution_id, []) if r is not run] + [run]
        self._runs.setdefault(execution_id, {})[run.step_id] = run
        if await self._store.save_step(execution_id, owner, *self._hidden_runs(execution_id, runs)):
            self._cancel_requested.add(execution_id)

    async def _reschedule(
        self,
        execution_id: str,
        owner: str,
        due_at: datetime,
        error: dict[str, Any] | None,
        runs: list[StepRun] | None = None,
    ) -> None:
        await self._store.reschedule(
            execution_id,
            owner,
            due_at,
            self._hide(execution_id, error),
            self._hidden_runs(execution_id, runs or []),
        )

    def _unsaved_results(self, execution_id: str) -> bool:
        """Whether a step's result waits to be written (skipped steps do not count)."""
        return any(r.status != "skipped" for r in self._pending.get(execution_id, ()))

    def _defer(self, execution_id: str, run: StepRun) -> None:
        pending = self._pending.setdefault(execution_id, [])
        if not any(r is run for r in pending):
            pending.append(run)
        self._runs.setdefault(execution_id, {})[run.step_id] = run

    async def run(self, execution: Execution, owner: str) -> str:
        """Advance `execution` as far as it goes now; returns its status afterwards."""
        if execution.cancel_requested:
            self._cancel_requested.add(execution.id)
        try:
            outcome = await self._advance(execution, owner)
            if outcome.status == "rescheduled":
                return "running"
            await self._pace()
            final = await self._store.finish(
                execution.id,
                owner,
                outcome.status,
                output=self._hide(execution.id, outcome.output),
                error=self._hide(execution.id, outcome.error),
                runs=self._hidden_runs(execution.id, self._pending.pop(execution.id, [])),
            )
            runs = sorted(self._runs.get(execution.id, {}).values(), key=lambda r: r.position)
            self.finished[execution.id] = (final, runs)
            return outcome.status
        finally:
            self._cancel_requested.discard(execution.id)
            self._pending.pop(execution.id, None)
            self._runs.pop(execution.id, None)
            self._hidden.pop(execution.id, None)

    async def _advance(self, execution: Execution, owner: str) -> Outcome:
        bundle = await self._store.metadata(execution.metadata_version)
        workflow = bundle.workflow(execution.tenant, execution.workflow) if bundle else None
        if bundle is None or workflow is None:
            return Outcome(
                "failed",
                error={
                    "type": "metadata",
                    "message": f"workflow '{execution.workflow}' is not in metadata version "
                    f"{execution.metadata_version}",
                },
            )
        # A first claim of a new action has no ledger yet (a replay may bring one).
        fresh = execution.claims <= 1 and execution.replay_of is None
        ledger = {} if fresh else {r.step_id: r for r in await self._store.step_runs(execution.id)}
        self._runs[execution.id] = dict(ledger)
        if has_sensitive(workflow.input_schema):
            # Sealed in the Pipe DB; in clear only here, in memory, for the steps that need it.
            if self._vault is None:
                return Outcome(
                    "failed",
                    error={"type": "input", "message": "sensitive input needs the secret key"},
                )
            try:
                data = unseal_sensitive(
                    execution.input, workflow.input_schema, self._vault, execution.tenant
                )
            except VaultError as exc:
                return Outcome(
                    "failed", error={"type": "input", "message": f"sensitive input: {exc}"}
                )
            self._hidden[execution.id] = sensitive_values(data, workflow.input_schema)
            execution = replace(execution, input=data)
        return await Walk(self, execution, owner, bundle, ledger).workflow(workflow)

    async def _step(
        self,
        execution: Execution,
        owner: str,
        bundle: MetadataBundle,
        workflow: WorkflowSpec,
        step: ActionStep,
        key: str,
        position: int,
        run: StepRun | None,
        context: dict[str, Any],
        value_maps: dict[str, ValueMap],
    ) -> Outcome | None:
        """Run one CRM step; `key` is its ledger key (`loop[3].note`), see `_flow`.

        Returns None to go on to the next step, or how the execution ends.
        """
        if run is None:
            run = StepRun(step_id=key, position=position, status="pending")
        run.position = position
        step_key = f"{execution.id}:{key}"

        def fail(final: str, kind: str, message: str, **extra: Any) -> Outcome:
            error = {"type": kind, "message": message, "step": key, **extra}
            return Outcome(final, error=error)

        try:
            if step.when is not None and not is_truthy(
                compiled_expression(step.when).evaluate(context, value_maps)
            ):
                run.status, run.finished_at, run.output = "skipped", utcnow(), None
                self._defer(execution.id, run)
                context["steps"][step.id] = None
                return None
            inputs = self._inputs(step, context, value_maps)
        except ExpressionError as exc:
            run.status, run.error, run.finished_at = "failed", _error(exc), utcnow()
            await self._save(execution.id, owner, run)
            return fail("failed", "expression", exc.message)

        conn_name = step.connection or workflow.connection
        connection = bundle.connections[conn_name]
        operation_name = STEP_OPERATION[step.type]
        try:
            target = await self._targets.resolve(execution.metadata_version, bundle, connection)
            if step.timeout_seconds is not None:
                target = dataclasses.replace(target, timeout_seconds=step.timeout_seconds)
            operation = target.spec.operation(step.object, operation_name)
            if operation is None:
                raise FatalError(
                    f"connector '{target.spec.id}' cannot {operation_name} '{step.object}'"
                )
        except UwfError as exc:
            run.status, run.error, run.finished_at = "failed", _error(exc), utcnow()
            await self._save(execution.id, owner, run)
            return fail("failed", "connection", exc.message, connection=conn_name)

        obj = target.spec.objects[step.object]
        # `now` is fixed for this attempt, so a re-sent request carries the same time.
        op_context = {**inputs, "step_key": step_key, "now": _iso_now()}
        if isinstance(inputs.get("fields"), dict):
            try:
                op_context["fields"] = obj.to_native(inputs["fields"])
            except ExpressionError as exc:
                # A value its field's type cannot take: nothing is sent, the step fails.
                run.status, run.error, run.finished_at = "failed", _error(exc), utcnow()
                await self._save(execution.id, owner, run)
                return fail("failed", "mapping", exc.message)
        # Records come back in the canonical shape (plus `native`); comments as the CRM sends them.
        canonical = obj.to_canonical if operation_name != "add_comment" else _same
        retry = step.retry or connection.retry
        limits = connection.limits or target.spec.limits
        if run.status in ("sending", "outcome_unknown") and not operation.is_idempotent:
            # The request may have reached the CRM before we lost track of it.
            found = await self._verify(
                execution, owner, target, operation, op_context, run, (conn_name, limits)
            )
            if isinstance(found, Outcome):
                return found
            if found is not None:
                self._done(run, context, step, canonical(found), inputs)
                await self._save(execution.id, owner, run)
                return None
            if run.attempts >= retry.max_attempts:
                # Not written, and no attempt left: dead, with the payload, never sent again.
                run.status, run.finished_at = "failed", utcnow()
                await self._save(execution.id, owner, run)
                return fail(
                    "dead",
                    "retries_exhausted",
                    f"gave up after {run.attempts} attempts; the CRM was checked and has no "
                    f"trace of the last one: {(run.error or {}).get('message', 'no answer')}",
                )

        cache_key = LookupCache.key(execution.metadata_version, connection, step, inputs)
        cached = self._lookups.get(cache_key) if cache_key is not None else None
        if cached is not None:
            # A recent identical lookup answered this: no request, no budget used.
            run.request = {
                "operation": operation_name,
                "object": step.object,
                "connection": conn_name,
                "inputs": redact(inputs, target.auth.secrets),
                "cached": True,
            }
            self._done(run, context, step, canonical(cached), inputs)
            await self._save(execution.id, owner, run)
            return None

        admission = await self._governor.admit(conn_name, limits)
        if admission.wait > 0:
            # The connection's budget says not now: come back then, without using an attempt.
            await self._reschedule(
                execution.id,
                owner,
                utcnow() + timedelta(seconds=admission.wait),
                {
                    "type": "throttled",
                    "step": key,
                    "connection": conn_name,
                    "message": f"waiting {admission.wait:.1f} s: {admission.reason}",
                    "retry_in_seconds": round(admission.wait, 3),
                },
                runs=self._pending.pop(execution.id, []),
            )
            return Outcome("rescheduled")
        before = (run.status, run.attempts, run.request, run.started_at)
        run.attempts += 1
        run.status, run.error, run.response, run.finished_at = "sending", None, None, None
        run.request = {
            "operation": operation_name,
            "object": step.object,
            "connection": conn_name,
            "inputs": redact(inputs, target.auth.secrets),
            "sent_at": _iso_now(),
        }
        run.started_at = run.started_at or utcnow()
        if operation.is_idempotent and not self._unsaved_results(execution.id):
            # Sending it twice does no harm, so the ledger need not know it may have left.
            self._defer(execution.id, run)
        else:
            # Before a request leaves: what the previous steps did is on record (and visible).
            await self._save(execution.id, owner, run)
            if execution.id in self._cancel_requested:
                # Asked while the previous step ran (its entry was deferred): not sent.
                run.status, run.attempts, run.request, run.started_at = before
                self._defer(execution.id, run)
                return fail(
                    "cancelled", "cancelled", f"cancelled on request before step '{step.id}'"
                )
        await self._pace()
        try:
            async with self._governor.slot(conn_name, limits, admission):
                try:
                    result = await self._runtime.call(target, operation, op_context, value_maps)
                except ConnectorError as exc:
                    await self._observe_failure(conn_name, limits, target, exc)
                    raise
                await self._observe_answer(conn_name, limits, target, result.response)
        except RetryableError as exc:
            self._record_failure(run, exc)
            if run.attempts >= retry.max_attempts:
                run.status = "failed"
                await self._save(execution.id, owner, run)
                return fail(
                    "dead",
                    "retries_exhausted",
                    f"gave up after {run.attempts} attempts: {exc.message}",
                    status=exc.status,
                )
            run.status = "retrying"
            await self._save(execution.id, owner, run)
            delay = _backoff(retry, run.attempts, exc.retry_after)
            await self._reschedule(
                execution.id,
                owner,
                utcnow() + timedelta(seconds=delay),
                {
                    "type": "retrying",
                    "message": exc.message,
                    "step": key,
                    "retry_in_seconds": round(delay, 3),
                },
            )
            return Outcome("rescheduled")
        except OutcomeUnknownError as exc:
            self._record_failure(run, exc)
            run.status = "outcome_unknown"
            await self._save(execution.id, owner, run)
            if operation.verify is not None:
                # Checked before anything else happens; whether it may be sent again (attempts
                # left) is decided only if the check finds nothing.
                delay = _backoff(retry, run.attempts, None)
                await self._reschedule(
                    execution.id,
                    owner,
                    utcnow() + timedelta(seconds=delay),
                    {"type": "verifying", "message": exc.message, "step": key},
                )
                return Outcome("rescheduled")
            return fail(
                "dead",
                "outcome_unknown",
                f"{exc.message}; not re-sent, because sending it twice could write twice",
                status=exc.status,
            )
        except ConnectorError as exc:
            self._record_failure(run, exc)
            run.status = "failed"
            await self._save(execution.id, owner, run)
            return fail("failed", "crm_error", exc.message, status=exc.status)

        run.request, run.response = result.request, result.response
        if cache_key is not None:
            self._lookups.put(cache_key, connection, step, result.result)
        try:
            self._done(run, context, step, canonical(result.result), inputs)
        except UwfError as exc:
            run.status, run.error, run.finished_at = "failed", _error(exc), utcnow()
            await self._save(execution.id, owner, run)
            return fail("failed", "result", exc.message)
        if operation.is_idempotent:
            # Done twice is done once: a crash before the next entry only repeats the request.
            self._defer(execution.id, run)
        else:
            await self._save(execution.id, owner, run)
        return None

    async def _verify(
        self,
        execution: Execution,
        owner: str,
        target: Target,
        operation: OperationSpec,
        op_context: dict[str, Any],
        run: StepRun,
        budget: tuple[str, LimitsSpec],
    ) -> Any:
        """Returns the found record, an `Outcome` that ends the step, or None to send again.

        `budget` names the connection and the limits its check counts against.
        """
        if operation.verify is None:
            run.status, run.finished_at = "outcome_unknown", utcnow()
            run.error = {
                "type": "outcome_unknown",
                "message": "the request may have been sent before a crash, and "
                f"{target.spec.name} offers no way to check; not re-sent",
            }
            await self._save(execution.id, owner, run)
            return Outcome("dead", error={**run.error, "step": run.step_id})
        conn_name, limits = budget
        try:
            found, record = await self._runtime.verify(
                target,
                operation.verify,
                op_context,
                gate=functools.partial(self._governed, conn_name, limits, target),
            )
        except _Throttled as exc:
            # The check waits for the connection's budget like any request, using no attempt.
            await self._reschedule(
                execution.id,
                owner,
                utcnow() + timedelta(seconds=exc.wait),
                {
                    "type": "throttled",
                    "step": run.step_id,
                    "connection": conn_name,
                    "message": f"checking waits {exc.wait:.1f} s: {exc.reason}",
                    "retry_in_seconds": round(exc.wait, 3),
                },
                runs=self._pending.pop(execution.id, []),
            )
            return Outcome("rescheduled")
        except RetryableError as exc:
            # Checking is bounded like sending: give up (dead, payload kept) after as many tries.
            checks = int((run.error or {}).get("verify_attempts", 0)) + 1
            run.error = {**(run.error or {}), "verify_attempts": checks}
            if checks >= RetrySpec().max_attempts:
                return Outcome(
                    "dead",
                    error={
                        "type": "outcome_unknown",
                        "step": run.step_id,
                        "message": f"could not check whether the write happened after "
                        f"{checks} tries: {exc.message}",
                    },
                )
            await self._save(execution.id, owner, run)
            await self._reschedule(
                execution.id,
                owner,
                utcnow() + timedelta(seconds=_backoff(RetrySpec(), checks, exc.retry_after)),
                {"type": "verifying", "message": exc.message, "step": run.step_id},
            )
            return Outcome("rescheduled")
        except ConnectorError as exc:
            return Outcome(
                "dead",
                error={
                    "type": "outcome_unknown",
                    "step": run.step_id,
                    "message": f"could not check whether the write happened: {exc.message}",
                },
            )
        if found is None:
            wait = _settling(operation.verify.settle_seconds, run)
            if wait > 0:
                # The CRM's search may not see the write yet: look again later, do not resend.
                run.status = "outcome_unknown"
                await self._save(execution.id, owner, run)
                await self._store.reschedule(
                    execution.id,
                    owner,
                    utcnow() + timedelta(seconds=wait),
                    {
                        "type": "verifying",
                        "step": run.step_id,
                        "message": f"not found yet; {target.spec.name}'s search can lag behind a "
                        f"write, so checking again in {wait:.1f} s before sending again",
                    },
                )
                return Outcome("rescheduled")
            return None
        run.response = {"verified": True, **record["response"]}
        return found

    async def _governed(
        self,
        conn_name: str,
        limits: LimitsSpec,
        target: Target,
        send: Callable[[], Awaitable[Sent]],
    ) -> Sent:
        """Send one request within the connection's budgets and learn from its answer."""
        admission = await self._governor.admit(conn_name, limits)
        if admission.wait > 0:
            raise _Throttled(admission.wait, admission.reason or "budget used")
        async with self._governor.slot(conn_name, limits, admission):
            try:
                answer, record = await send()
            except ConnectorError as exc:
                await self._observe_failure(conn_name, limits, target, exc)
                raise
            await self._observe_answer(conn_name, limits, target, answer)
        return answer, record

    async def _observe_answer(
        self, conn_name: str, limits: LimitsSpec, target: Target, answer: dict[str, Any]
    ) -> None:
        """The governor learns from an answer (`status`, lower-cased `headers`)."""
        await self._governor.observe(
            conn_name,
            limits,
            target.spec.rate_limit,
            answer.get("status"),
            answer.get("headers") or {},
        )

    async def _observe_failure(
        self, conn_name: str, limits: LimitsSpec, target: Target, exc: ConnectorError
    ) -> None:
        await self._governor.observe(
            conn_name,
            limits,
            target.spec.rate_limit,
            exc.status,
            (exc.response or {}).get("headers") or {},
            getattr(exc, "retry_after", None),
        )

    def _done(
        self,
        run: StepRun,
        context: dict[str, Any],
        step: ActionStep,
        result: Any,
        inputs: dict[str, Any],
    ) -> None:
        if step.type == "lookup":
            matches = result if isinstance(result, list) else ([result] if result else [])
            default = getattr(step, "default", None)
            if not matches and default is not None:
                matches = [compiled_value(default).evaluate(context)]
            if not matches and step.required:
                raise FatalError(
                    f"no {step.object} matches {json.dumps(inputs.get('criteria'), default=str)}"
                )
            result = matches[0] if matches else None
        output = result
        if step.output is not None:
            output = {
                name: compiled_expression(expr).evaluate(result)
                for name, expr in step.output.items()
            }
        run.status, run.output, run.error, run.finished_at = "succeeded", output, None, utcnow()
        context["steps"][step.id] = output

    @staticmethod
    def _inputs(
        step: ActionStep, context: dict[str, Any], value_maps: dict[str, ValueMap]
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        # The context is checked against the size limits once for every input of the step.
        checked = document_fits(context)
        for name in _STEP_INPUTS:
            if name not in type(step).model_fields:
                continue
            value = compiled_value(getattr(step, name)).evaluate(
                context, value_maps, name, checked=checked
            )
            if name in ("record_id", "owner_id") and value in (None, ""):
                raise ExpressionError(f"{name} of step '{step.id}' evaluated to null")
            if name == "fields" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
            inputs[name] = value
        return inputs

    @staticmethod
    def _record_failure(run: StepRun, exc: ConnectorError) -> None:
        run.error = _error(exc)
        if exc.request:  # the HTTP request as sent, still saying when
            run.request = {**exc.request, "sent_at": (run.request or {}).get("sent_at")}
        run.response = exc.response
        run.finished_at = utcnow()


async def _no_pause() -> None:
    return None


def _settling(settle_seconds: float, run: StepRun) -> float:
    """Seconds until a look-up can be trusted to see the write last sent for `run`."""
    sent_at = (run.request or {}).get("sent_at")
    if not settle_seconds or not isinstance(sent_at, str):
        return 0.0
    try:
        sent = datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (sent + timedelta(seconds=settle_seconds) - utcnow()).total_seconds())


def _iso_now() -> str:
    """ISO-8601 UTC with milliseconds, the form CRMs take (`2026-11-22T10:15:30.123Z`)."""
    return utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _same(value: Any) -> Any:
    return value


def _error(exc: UwfError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
    status = getattr(exc, "status", None)
    if status is not None:
        error["status"] = status
    return error


def _backoff(policy: RetrySpec, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; the CRM's Retry-After wins when it gave one."""
    if retry_after is not None:
        return min(retry_after, policy.max_delay_seconds)
    ceiling = min(policy.max_delay_seconds, policy.initial_delay_seconds * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
