"""Run a connector spec's operations over HTTP (aiohttp), and classify what comes back.

One `ClientSession` per CRM host, shared by every execution in the process (DESIGN decision 7).
Every call returns, or raises with, a redacted record of the request and the response, which the
engine writes to the step ledger.

How a failure is classified (the engine decides what to do with each class):

* could not connect, so nothing was sent: `RetryableError`;
* 429 and 503 (the CRM turned the request away before processing it): `RetryableError`;
* other `errors.retryable_statuses` (500, 502, 504, …) and timeouts or lost connections after
  the request was sent: `RetryableError` when the operation is idempotent, otherwise
  `OutcomeUnknownError` — the CRM may have applied it, so it is never re-sent blindly;
* any other status: `FatalError`, with the CRM's own message.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from uwf.auth import Authenticator, redact
from uwf.connectors._ssrf import GuardedResolver, NetworkPolicy, OutboundRefusedError
from uwf.connectors.spec import ConnectorSpec, OperationSpec, VerifySpec
from uwf.errors import (
    ConnectorError,
    ExpressionError,
    FatalError,
    OutcomeUnknownError,
    RetryableError,
)
from uwf.mapping import ValueMap

__all__ = ["CallResult", "ConnectorRuntime", "Gate", "Target", "parse_retry_after"]

# One request's answer and its record, as `_send` returns them.
Sent = tuple[dict[str, Any], dict[str, Any]]
# Sends one request on the caller's terms (its budgets): given the send, returns its answer.
Gate = Callable[[Callable[[], Awaitable[Sent]]], Awaitable[Sent]]

MAX_RECORDED_BODY = 64 * 1024
_REJECTED_BEFORE_PROCESSING = frozenset({429, 503})
_RECORDED_HEADERS = (
    "content-type",
    "location",
    "retry-after",
    "x-request-id",
    # The IETF draft's rate-limit headers, which the governor reads when a CRM sends them.
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom to call: a connection's resolved base URL, spec and authenticator."""

    connection: str
    base_url: str
    spec: ConnectorSpec
    auth: Authenticator
    timeout_seconds: float
    config: Mapping[str, str]
    connect_timeout: float = 10.0
    read_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class CallResult:
    request: dict[str, Any]
    response: dict[str, Any]
    result: Any


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now; it may be seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ConnectorRuntime:
    """Executes operations; owns the outbound HTTP sessions. Close it when done.

    Every outbound connection passes the network `policy` (`uwf.connectors.NetworkPolicy`):
    the URL before the request, each resolved address at connect time. Redirects are never
    followed: a CRM that answers 3xx gets the answer recorded, not a second request.
    """

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.policy = policy if policy is not None else NetworkPolicy()

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def session_for(self, url: str) -> aiohttp.ClientSession:
        """The shared session for `url`'s host (also used for token requests).

        Raises `OutboundRefusedError` when the policy forbids `url` (scheme, literal address).
        """
        self.policy.check_url(url)
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                # No DNS cache of aiohttp's own: every connect resolves through the guard.
                connector=aiohttp.TCPConnector(
                    limit=100, use_dns_cache=False, resolver=GuardedResolver(self.policy)
                ),
                raise_for_status=False,
            )
            self._sessions[key] = session
        return session

    @staticmethod
    def build(
        target: Target,
        operation: OperationSpec,
        context: dict[str, Any],
        value_maps: Mapping[str, ValueMap] | None = None,
    ) -> tuple[str, dict[str, str], dict[str, str], Any]:
        """The operation's path, query, headers and body for `context` (nothing is sent)."""
        maps = value_maps or {}
        ctx = {**context, "connection": dict(target.config)}
        compiled = operation.compiled
        try:
            path = str(compiled["path"].evaluate(ctx, maps))
            query = _clean_query(compiled["query"].evaluate(ctx, maps))
            headers = {k: str(v) for k, v in compiled["headers"].evaluate(ctx, maps).items()}
            body = compiled["body"].evaluate(ctx, maps) if compiled["body"] is not None else None
        except ExpressionError as exc:
            raise FatalError(f"cannot build the request: {exc.message}") from None
        if operation.idempotency_header and context.get("step_key"):
            headers[operation.idempotency_header] = str(context["step_key"])
        return path, query, headers, body

    async def call(
        self,
        target: Target,
        operation: OperationSpec,
        context: dict[str, Any],
        value_maps: Mapping[str, ValueMap] | None = None,
    ) -> CallResult:
        """Send one operation. Raises a `ConnectorError` subclass on failure."""
        ctx = {**context, "connection": dict(target.config)}
        path, query, headers, body = self.build(target, operation, context, value_maps)
        compiled = operation.compiled
        answer, response = await self._send(
            target, operation.method, path, query, headers, body, operation.is_idempotent
        )
        result = answer["body"]
        if compiled["result"] is not None:
            try:
                result = compiled["result"].evaluate({**answer, "input": ctx})
            except ExpressionError as exc:
                raise FatalError(
                    f"unexpected response shape: {exc.message}",
                    request=response["request"],
                    response=response["response"],
                ) from None
        return CallResult(response["request"], response["response"], result)

    async def verify(
        self,
        target: Target,
        verify: VerifySpec,
        context: dict[str, Any],
        gate: Gate | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Look for the record a lost write would have made; returns (match or None, record).

        `gate`, when given, sends each request (each page) for the caller, so that checking
        counts against the connection's budgets like any other request.
        """
        ctx = {**context, "connection": dict(target.config)}
        compiled = verify.compiled
        try:
            path = str(compiled["path"].evaluate(ctx))
            query = _clean_query(compiled["query"].evaluate(ctx))
            body = compiled["body"].evaluate(ctx) if compiled["body"] is not None else None
            expected = compiled["expected"].evaluate(ctx)
        except ExpressionError as exc:
            raise FatalError(f"cannot build the verification request: {exc.message}") from None
        pages = range(verify.first_page, verify.first_page + verify.max_pages)
        for page in pages if verify.page_param else [None]:
            if page is not None:
                query = {**query, str(verify.page_param): str(page)}
            send = functools.partial(self._send, target, verify.method, path, query, {}, body, True)
            answer, record = await (gate(send) if gate is not None else send())
            items = compiled["items"].evaluate({**answer, "input": ctx}) or []
            for item in items if isinstance(items, list) else []:
                if _same(compiled["marker"].evaluate(item), expected):
                    return item, record
            if not items:
                break
        return None, record

    async def fetch(
        self,
        target: Target,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One authenticated request outside any operation (describe, dry-run reads).

        Returns the answer: `body`, `status` and lower-cased `headers`; raises like `call`.
        """
        answer, _ = await self._send(
            target, method, path, query or {}, {}, body, method in ("GET", "PUT", "PATCH")
        )
        return answer

    async def _send(
        self,
        target: Target,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        idempotent: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Returns the answer (`body`, `status`, lower-cased `headers`) and the ledger records.

        A `401` is answered once by asking the authenticator for fresh credentials (an expired
        OAuth token) and sending again: the CRM refused the request, so nothing was written.
        """
        for attempt in (1, 2):
            auth_headers = await target.auth.headers()
            status, reason, resp_headers, records = await self._exchange(
                target, method, path, query, {**headers, **auth_headers}, body, idempotent
            )
            if status != 401 or attempt == 2 or not await target.auth.rejected(auth_headers):
                break
        body_json = records.pop("body_json")
        if 200 <= status < 300:
            answer = {
                "body": body_json,
                "status": status,
                "headers": {k.lower(): v for k, v in resp_headers.items()},
            }
            return answer, records
        raise self._error(target, status, reason, body_json, resp_headers, idempotent, records)

    async def _exchange(
        self,
        target: Target,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        idempotent: bool,
    ) -> tuple[int, str, Mapping[str, str], dict[str, Any]]:
        url = target.base_url.rstrip("/") + "/" + path.lstrip("/")
        all_headers = {**target.spec.default_headers, **headers}
        secrets = target.auth.secrets
        request_record = redact(
            {"method": method, "url": url, "query": query, "headers": all_headers, "body": body},
            secrets,
        )
        timeout = aiohttp.ClientTimeout(
            total=target.timeout_seconds,
            connect=min(target.connect_timeout, target.timeout_seconds),
            sock_read=target.read_timeout,
        )
        started = time.perf_counter()
        connection = target.connection
        try:
            session = self.session_for(url)
            async with session.request(
                method,
                url,
                params=query or None,
                headers=all_headers,
                json=body,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                reason = resp.reason or ""
                resp_headers = resp.headers
        except OutboundRefusedError as exc:
            raise OutboundRefusedError(
                exc.message, request=request_record, connection=connection
            ) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise RetryableError(
                f"could not connect to {target.connection}: {_describe(exc)}",
                request=request_record,
                connection=connection,
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            cls = RetryableError if idempotent else OutcomeUnknownError
            raise cls(
                f"no response from {target.connection} after the request was sent: "
                f"{_describe(exc)}",
                request=request_record,
                connection=connection,
            ) from None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        body_json = _decode(raw, resp_headers.get("Content-Type", ""))
        response_record = redact(
            {
                "status": status,
                "headers": _recorded_headers(resp_headers, target.spec),
                "body": _recordable(body_json, raw),
                "elapsed_ms": elapsed_ms,
            },
            secrets,
        )
        records = {"request": request_record, "response": response_record, "body_json": body_json}
        return status, reason, resp_headers, records

    @staticmethod
    def _error(
        target: Target,
        status: int,
        reason: str,
        body: Any,
        headers: Mapping[str, str],
        idempotent: bool,
        records: dict[str, Any],
    ) -> ConnectorError:
        """The one place an HTTP status becomes an error class."""
        crm_message = _crm_message(target.spec, body)
        message = f"{target.spec.name} answered {status} {reason}".rstrip()
        if crm_message:
            message += f": {crm_message}"
        kwargs: dict[str, Any] = {"status": status, "connection": target.connection, **records}
        if status in target.spec.errors.retryable_statuses:
            retry_after = parse_retry_after(headers.get(target.spec.rate_limit.retry_after))
            if idempotent or status in _REJECTED_BEFORE_PROCESSING:
                return RetryableError(message, retry_after=retry_after, **kwargs)
            return OutcomeUnknownError(message, **kwargs)
        return FatalError(message, **kwargs)


def _same(found: Any, expected: Any) -> bool:
    """Equal, allowing for CRMs that return every value as a string (ServiceNow)."""
    if found is None or expected is None:
        return False
    return bool(found == expected or str(found).strip() == str(expected).strip())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _clean_query(query: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (query or {}).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _recordable(body: Any, raw: bytes) -> Any:
    if len(raw) <= MAX_RECORDED_BODY:
        return body
    return {"truncated": True, "bytes": len(raw), "start": raw[:2048].decode(errors="replace")}


def _recorded_headers(headers: Mapping[str, str], spec: ConnectorSpec) -> dict[str, str]:
    wanted = {h.lower() for h in (*_RECORDED_HEADERS, *spec.recorded_headers)}
    limits = spec.rate_limit
    wanted |= {h.lower() for h in (limits.limit, limits.remaining, limits.reset) if h}
    return {k: v for k, v in headers.items() if k.lower() in wanted}


def _crm_message(spec: ConnectorSpec, body: Any) -> str | None:
    if isinstance(body, str):
        return body.strip()[:500] or None
    if body is None:
        return None
    try:
        message = spec.errors.message_expression.evaluate(body)
    except ExpressionError:
        message = None
    if isinstance(message, str) and message:
        return message[:1000]
    return json.dumps(body)[:500]
