"""ServiceNow Table API sandbox: the routes, auth, token endpoint, limits and error bodies.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (ServiceNow), the Table API description and
recorded fixtures in ``shared/crm-specs/servicenow`` and docs.servicenow.com. Where the exact
wording of a body is not published (malformed JSON, unknown URI, the rate-limit 429) the body
keeps ServiceNow's ``{"error": {"message", "detail"}, "status": "failure"}`` form and
docs/crms/servicenow.md marks it unverified. Encoded queries (``sysparm_query``) are parsed
and run here; tables, seed data, JSON shapes and business rules live in `_servicenow_records`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import operator
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from uwf.sandboxes import _servicenow_records as snow
from uwf.sandboxes._common import Json, public_base_url
from uwf.sandboxes._harness import ControlError, SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._store import SandboxStore

__all__ = ["ServiceNowControl", "ServiceNowProfile", "create_app", "credentials"]

_JSON = "application/json;charset=UTF-8"
_DEFAULT_LIMIT = 10_000  # sysparm_limit's documented default
_RULE_PER_HOUR = 100_000  # the seeded "all users" rule; real instances ship none
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# --------------------------------------------------------------------------- error responses


def _not_authenticated() -> snow.SnowError:
    # Body from the shared fixture {tableName}/401.json; the realm header is what instances send.
    error = snow.failure(401, "User Not Authenticated", "Required to provide Auth information")
    error.headers["WWW-Authenticate"] = 'BASIC realm="Service-now"'
    return error


def _access_denied() -> snow.SnowError:
    # What oauth_token.do answers to any refused grant (bad client, password, refresh token,
    # or a JSON body): ServiceNow does not use RFC 6749's invalid_grant / invalid_client.
    return snow.SnowError(401, {"error_description": "access_denied", "error": "server_error"})


def _rate_limited(
    limit: int, retry_after: int, headers: Mapping[str, str], per: str = "hour"
) -> snow.SnowError:
    detail = f"The rate limit of {limit} requests per {per} for this user was exceeded"
    return snow.failure(
        429, "Rate limit exceeded", detail, {**headers, "Retry-After": str(retry_after)}
    )


@dataclass(frozen=True, slots=True)
class ServiceNowProfile:
    """ServiceNow's limits, headers and failure bodies for the shared harness."""

    crm: str = "servicenow"
    # An instance-wide guard standing in for node transaction quotas; ServiceNow's documented
    # limits are the per-user hourly rules (`rate_limit_per_hour`, checked by the router).
    rate_limit_per_minute: int = 6000
    keyed_limits: Mapping[str, KeyedLimit] = field(
        default_factory=lambda: {"rate_limit_per_hour": KeyedLimit(_RULE_PER_HOUR, 3600.0)}
    )
    injectable_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        # X-RateLimit-* only accompany a matching sys_rate_limit_rules rule, which the router
        # checks per user; the instance-wide guard adds nothing.
        return []

    def rate_limited(self, decision: LimitDecision) -> Response:
        error = _rate_limited(decision.limit, decision.reset_s, {}, per="minute")
        return JSONResponse(error.body, 429, error.headers, media_type=_JSON)

    def injected_error(self, status: int) -> Response:
        # Retry-After: 1 keeps fault-injection runs fast while proving clients honour it.
        if status == 429:
            error = _rate_limited(_RULE_PER_HOUR, 1, {})
            return JSONResponse(error.body, 429, error.headers, media_type=_JSON)
        if status == 500:
            body = snow.failure(500, "Internal server error", "An unexpected error occurred").body
            return JSONResponse(body, 500, media_type=_JSON)
        # 502/503/504 come from the load balancer in front of the instance, as HTML.
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[status]
        headers = {"Retry-After": "1"} if status == 503 else {}
        html = f"<html><body><h1>{status} {reason}</h1></body></html>"
        return PlainTextResponse(html, status, headers, media_type="text/html")


class ServiceNowControl(SandboxControl):
    """The shared `_control` plus ``token_ttl_seconds`` and token-endpoint stats.

    ``GET _control`` adds ``stats.token_requests`` (all requests to ``/oauth_token.do``) and
    ``stats.token_requests_by_grant_type``; ``POST _control {"token_ttl_seconds": n}`` sets the
    lifetime of access tokens issued from then on (default 1800, ServiceNow's).
    """

    def reset(self) -> None:
        super().reset()
        self.token_ttl_seconds = snow.DEFAULT_TOKEN_TTL
        self.token_requests: Counter[str] = Counter()

    def settings(self) -> Json:
        return {**super().settings(), "token_ttl_seconds": self.token_ttl_seconds}

    def snapshot(self) -> Json:
        snapshot = super().snapshot()
        snapshot["stats"]["token_requests"] = sum(self.token_requests.values())
        by_grant = dict(sorted(self.token_requests.items()))
        snapshot["stats"]["token_requests_by_grant_type"] = by_grant
        return snapshot

    def update(self, body: Any) -> None:
        if not isinstance(body, dict) or "token_ttl_seconds" not in body:
            super().update(body)
            return
        ttl = body["token_ttl_seconds"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ControlError("token_ttl_seconds", "token_ttl_seconds must be an integer >= 1")
        super().update({k: v for k, v in body.items() if k != "token_ttl_seconds"})
        self.token_ttl_seconds = ttl


# --------------------------------------------------------------------------- encoded queries

_CONDITION = re.compile(
    r"(?P<field>[a-z_][a-z0-9_.]*)"
    r"(?P<op>!=|>=|<=|=|>|<|NOT LIKE|LIKE|STARTSWITH|ENDSWITH|NOT IN|IN|ISNOTEMPTY|ISEMPTY"
    r"|ANYTHING|EMPTYSTRING)(?P<value>.*)",
    re.DOTALL,
)


_Condition = tuple[str, str, str]  # field, operator, value


@dataclass(frozen=True, slots=True)
class _Query:
    """A parsed ``sysparm_query``: ``^NQ`` groups of ANDed ``^OR`` alternatives, plus order."""

    groups: tuple[tuple[tuple[_Condition, ...], ...], ...] = ()
    order: tuple[tuple[str, bool], ...] = ()  # (field, descending)
    invalid: bool = False


def _parse_query(text: str, table: snow.TableDef) -> _Query:
    """Parse an encoded query. Unknown fields make it invalid: like an instance with
    ``glide.invalid_query.returns_no_rows=true``, an invalid query matches nothing."""
    groups: list[list[list[_Condition]]] = [[]]
    order: list[tuple[str, bool]] = []
    invalid = False
    # ``^`` separates terms; ``^^`` stands for a literal caret inside a value.
    for term in (t.replace("\0", "^") for t in text.replace("^^", "\0").split("^") if t):
        if term.startswith("ORDERBY"):
            desc = term.startswith("ORDERBYDESC")
            name = term.removeprefix("ORDERBYDESC" if desc else "ORDERBY")
            invalid |= name.split(".")[0] not in table.fields
            order.append((name, desc))
            continue
        kind = term[:2] if term[:2] in ("OR", "NQ") else ""
        match = _CONDITION.fullmatch(term[len(kind) :])
        if match is None or match["field"].split(".")[0] not in table.fields:
            invalid = True
            continue
        condition = (match["field"], match["op"], match["value"])
        if kind == "NQ":
            groups.append([[condition]])
        elif kind == "OR" and groups[-1]:
            groups[-1][-1].append(condition)
        else:
            groups[-1].append([condition])
    frozen = tuple(tuple(tuple(alt) for alt in group) for group in groups if group)
    return _Query(frozen, tuple(order), invalid)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _test(actual: str, op: str, wanted: str) -> bool:
    # MySQL-backed instances compare strings case-insensitively; so does the sandbox.
    a, w = actual.casefold(), wanted.casefold()
    if op in _ORDERING:
        na, nw = _number(actual), _number(wanted)
        if na is not None and nw is not None:
            return bool(_ORDERING[op](na, nw))
        return bool(_ORDERING[op](a, w))
    tests: dict[str, Callable[[], bool]] = {
        "=": lambda: a == w, "!=": lambda: a != w, "LIKE": lambda: w in a,
        "NOT LIKE": lambda: w not in a, "STARTSWITH": lambda: a.startswith(w),
        "ENDSWITH": lambda: a.endswith(w), "IN": lambda: a in w.split(","),
        "NOT IN": lambda: a not in w.split(","), "ISEMPTY": lambda: a == "",
        "ISNOTEMPTY": lambda: a != "", "ANYTHING": lambda: True, "EMPTYSTRING": lambda: a == "",
    }  # fmt: skip
    return tests[op]()


def _find_records(
    conn: sqlite3.Connection, table: snow.TableDef, query: _Query
) -> list[dict[str, str]]:
    """Every record of ``table`` matching ``query``, in its order (default: insertion)."""
    if query.invalid:
        return []

    def matches(record: Mapping[str, str]) -> bool:
        if not query.groups:
            return True
        return any(
            all(
                any(_test(snow.field_value(conn, table, record, f), op, v) for f, op, v in alt)
                for alt in group
            )
            for group in query.groups
        )

    found = [r for r in snow.rows(conn, table.name) if matches(r)]
    for name, desc in reversed(query.order):  # stable sorts, last key first
        is_number = name in table.fields and table.fields[name].internal_type == "integer"

        def key(record: Mapping[str, str], name: str = name, num: bool = is_number) -> Any:
            value = snow.field_value(conn, table, record, name)
            return (_number(value) or 0.0) if num else value.casefold()

        found.sort(key=key, reverse=desc)
    return found


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class _Params:
    options: snow.RenderOptions
    query: str
    limit: int
    offset: int
    suppress_links: bool
    no_count: bool


def _params(request: Request) -> _Params:
    query = request.query_params

    def flag(name: str) -> bool:
        # Clients send "true", "True" (requests' str(True)) or "1".
        return query.get(name, "").lower() in ("true", "1")

    display = query.get("sysparm_display_value", "false").lower()
    limit, offset = query.get("sysparm_limit", ""), query.get("sysparm_offset", "")
    options = snow.RenderOptions(
        base=public_base_url(request),
        display=display if display in ("true", "all") else "false",
        exclude_links=flag("sysparm_exclude_reference_link"),
        fields=snow.field_list(query.get("sysparm_fields", "")),
    )
    return _Params(
        options,
        query.get("sysparm_query", ""),
        int(limit) if limit.isdigit() and int(limit) > 0 else _DEFAULT_LIMIT,
        int(offset) if offset.isdigit() else 0,
        flag("sysparm_suppress_pagination_header"),
        flag("sysparm_no_count"),
    )


def _links(request: Request, limit: int, offset: int, total: int) -> str:
    def url(at: int) -> str:
        return str(request.url.include_query_params(sysparm_limit=limit, sysparm_offset=at))

    rels = [("first", 0)]
    if offset > 0:
        rels.append(("prev", max(0, offset - limit)))
    if offset + limit < total:
        rels.append(("next", offset + limit))
    rels.append(("last", max(0, (total - 1) // limit * limit)))
    return ",".join(f'<{url(at)}>;rel="{rel}"' for rel, at in rels)


def _existing(conn: sqlite3.Connection, table: snow.TableDef, sys_id: str) -> dict[str, str]:
    record = snow.get_record(conn, table.name, sys_id)
    if record is None:
        raise snow.no_record()
    return record


def _table(request: Request) -> snow.TableDef:
    name = str(request.path_params["table"])
    table = snow.TABLES.get(name)
    if table is None:
        raise snow.failure(404, f"Invalid table {name}", None)  # fixture {tableName}/404.json
    return table


async def _json_body(request: Request) -> Json:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise snow.failure(400, "Exception while reading request", "The payload is not valid JSON.")
    return body


def _rule_headers(decision: LimitDecision) -> dict[str, str]:
    if not decision.limit:
        return {}  # no rule applies: ServiceNow sends no rate-limit headers
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Reset": str(int(time.time()) + decision.reset_s),
        "X-RateLimit-Rule": snow.RATE_RULE_SYS_ID,
    }


# --------------------------------------------------------------------------- the API


class _ServiceNowApi:
    """Route handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: ServiceNowControl) -> None:
        self.store, self.control = store, control

    # ---- auth

    async def authenticate(self, request: Request) -> snow.Caller:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        caller: snow.Caller | None = None
        if scheme.lower() == "basic":
            user_name, sep, password = _basic(value).partition(":")
            if sep:
                caller = await self.store.run(_password_user, user_name, password)
        elif scheme.lower() == "bearer" and value.strip():
            caller = await self.store.run(_token_user, value.strip(), time.time())
        if caller is None:
            raise _not_authenticated()
        decision = self.control.check_keyed("rate_limit_per_hour", caller.sys_id)
        headers = _rule_headers(decision)
        request.state.snow_headers = headers
        if not decision.allowed:
            raise _rate_limited(decision.limit, decision.reset_s, headers)
        return caller

    @staticmethod
    def _json(
        request: Request, body: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        extra = getattr(request.state, "snow_headers", {})
        return JSONResponse(body, status, {**extra, **(headers or {})}, media_type=_JSON)

    async def token(self, request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and "client_id" not in form:
            # client_secret_basic, as requests-oauthlib (and so pysnow's OAuthClient) sends it.
            client_id, _, client_secret = _basic(value).partition(":")
            form.update(client_id=client_id, client_secret=client_secret)
        self.control.token_requests[form.get("grant_type") or "unknown"] += 1
        if content_type != "application/x-www-form-urlencoded":
            raise _access_denied()  # "A content-type of application/json results in an error"
        ttl = self.control.token_ttl_seconds
        body = await self.store.run(self._issue, form, ttl, time.time())
        return JSONResponse(body, 200, _TOKEN_HEADERS, media_type=_JSON)

    def _issue(self, conn: sqlite3.Connection, form: dict[str, str], ttl: int, now: float) -> Json:
        creds = self.store.credentials
        client, grant = creds["client_id"], form.get("grant_type", "")
        if grant not in ("password", "refresh_token", "client_credentials"):
            description = f"grant_type {grant!r} is not supported"
            raise snow.SnowError(
                400, {"error_description": description, "error": "unsupported_grant_type"}
            )
        if not (_same(form.get("client_id", ""), client)
                and _same(form.get("client_secret", ""), creds["client_secret"])):  # fmt: skip
            raise _access_denied()
        answer: Json = {}
        if grant == "password":
            caller = _password_user(conn, form.get("username", ""), form.get("password", ""))
            if caller is None:
                raise _access_denied()
            # "Access requests made within the expiration time of the access token always
            # return the current access token" (its expiry pushed out); the same for refresh.
            for kind, lifetime in (("access", ttl), ("refresh", snow.REFRESH_TOKEN_TTL)):
                answer[f"{kind}_token"] = _token(conn, client, caller.sys_id, grant, kind,
                                                 now + lifetime, reuse=True)  # fmt: skip
        elif grant == "refresh_token":
            row = conn.execute(
                "SELECT user_sys_id FROM oauth_tokens WHERE token = ? AND kind = 'refresh' "
                "AND client_id = ? AND expires_at > ?",
                (form.get("refresh_token", ""), client, now),
            ).fetchone()
            if row is None or _active_user(conn, row[0]) is None:
                raise _access_denied()
            answer["access_token"] = _token(conn, client, row[0], grant, "access", now + ttl)
            answer["refresh_token"] = form["refresh_token"]  # ServiceNow does not rotate it
        else:  # client_credentials acts as the application's OAuth user: the admin here
            answer["access_token"] = _token(conn, client, snow.ADMIN_SYS_ID, grant, "access",
                                            now + ttl)  # fmt: skip
        # expires_in is the seconds left, rounded down: 1799 for ServiceNow's 1800.
        return {**answer, "scope": "useraccount", "token_type": "Bearer",
                "expires_in": max(1, ttl - 1)}  # fmt: skip

    # ---- Table API

    async def list_records(self, request: Request) -> Response:
        await self.authenticate(request)
        table, params = _table(request), _params(request)
        rows, total = await self.store.run(self._list, table, params)
        headers: dict[str, str] = {}
        if not params.no_count:
            headers["X-Total-Count"] = str(total)
        if not params.suppress_links:
            headers["Link"] = _links(request, params.limit, params.offset, total)
        return self._json(request, {"result": rows}, headers=headers)

    @staticmethod
    def _list(
        conn: sqlite3.Connection, table: snow.TableDef, params: _Params
    ) -> tuple[list[Json], int]:
        found = _find_records(conn, table, _parse_query(params.query, table))
        page = found[params.offset : params.offset + params.limit]
        return [snow.render(conn, table, r, params.options) for r in page], len(found)

    async def get_one(self, request: Request) -> Response:
        await self.authenticate(request)
        table, params = _table(request), _params(request)

        def work(conn: sqlite3.Connection, sys_id: str) -> Json:
            return snow.render(conn, table, _existing(conn, table, sys_id), params.options)

        result = await self.store.run(work, request.path_params["sys_id"])
        return self._json(request, {"result": result})

    async def create(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        table, params = _table(request), _params(request)
        body = await _json_body(request)

        def work(conn: sqlite3.Connection) -> tuple[str, Json]:
            wanted = str(body.get("sys_id") or "")
            if wanted and snow.get_record(conn, table.name, wanted) is not None:
                detail = f"Error during insert of {table.name} (duplicate sys_id {wanted})"
                raise snow.failure(403, "Operation Failed", detail)
            record = snow.write_record(conn, table, None, body, caller)
            return record["sys_id"], snow.render(conn, table, record, params.options)

        sys_id, result = await self.store.run(work)
        mark_write(request)
        location = f"{params.options.base}/api/now/table/{table.name}/{sys_id}"
        return self._json(request, {"result": result}, 201, {"Location": location})

    async def update(self, request: Request) -> Response:
        # PUT and PATCH are the same partial update in the Table API.
        caller = await self.authenticate(request)
        table, params = _table(request), _params(request)
        body = await _json_body(request)

        def work(conn: sqlite3.Connection, sys_id: str) -> Json:
            current = _existing(conn, table, sys_id)
            record = snow.write_record(conn, table, current, body, caller)
            return snow.render(conn, table, record, params.options)

        result = await self.store.run(work, request.path_params["sys_id"])
        mark_write(request)
        return self._json(request, {"result": result})

    async def delete(self, request: Request) -> Response:
        await self.authenticate(request)
        table = _table(request)

        def work(conn: sqlite3.Connection, sys_id: str) -> None:
            _existing(conn, table, sys_id)
            snow.delete_record(conn, table.name, sys_id)

        await self.store.run(work, request.path_params["sys_id"])
        mark_write(request)
        extra = getattr(request.state, "snow_headers", {})
        return Response(status_code=204, headers=extra)


# --------------------------------------------------------------------------- users and tokens


def _basic(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _active_user(conn: sqlite3.Connection, sys_id: str) -> snow.Caller | None:
    user = snow.get_record(conn, "sys_user", sys_id)
    if user is None or user["active"] != "true" or user["locked_out"] == "true":
        return None
    return snow.Caller(user["sys_id"], user["user_name"], user["name"])


def _password_user(conn: sqlite3.Connection, user_name: str, password: str) -> snow.Caller | None:
    row = conn.execute(
        "SELECT digest, (SELECT sys_id FROM records WHERE tbl = 'sys_user' AND "
        "json_extract(data, '$.user_name') = user_name) FROM user_passwords WHERE user_name = ?",
        (user_name,),
    ).fetchone()
    if row is None or row[1] is None or not _same(snow.hash_password(password), row[0]):
        return None
    return _active_user(conn, row[1])


def _token_user(conn: sqlite3.Connection, token: str, now: float) -> snow.Caller | None:
    row = conn.execute(
        "SELECT user_sys_id FROM oauth_tokens WHERE token = ? AND kind = 'access' "
        "AND expires_at > ?",
        (token, now),
    ).fetchone()
    return None if row is None else _active_user(conn, row[0])


def _token(
    conn: sqlite3.Connection, client: str, user: str, grant: str, kind: str, expires: float,
    *, reuse: bool = False,
) -> str:  # fmt: skip
    """A new token; with ``reuse``, the user's live one from an earlier ``grant``, re-armed.

    The dev tokens of `credentials()` carry grant ``dev``: never reused, so never re-armed
    to a shorter lifetime.
    """
    row = None
    if reuse:
        row = conn.execute(
            "SELECT token FROM oauth_tokens WHERE kind = ? AND client_id = ? AND user_sys_id = ? "
            "AND grant_type = ? AND expires_at > ? ORDER BY expires_at DESC LIMIT 1",
            (kind, client, user, grant, time.time()),
        ).fetchone()
    if row is not None:
        conn.execute("UPDATE oauth_tokens SET expires_at = ? WHERE token = ?", (expires, row[0]))
        return str(row[0])
    token = secrets.token_urlsafe(64)
    row = (token, kind, client, user, grant, expires)
    conn.execute("INSERT INTO oauth_tokens VALUES (?, ?, ?, ?, ?, ?)", row)
    return token


# --------------------------------------------------------------------------- app factory


def _open_store(home: Path) -> SandboxStore:
    store = SandboxStore(
        home / "sandboxes" / "servicenow.sqlite3",
        schema=snow.SCHEMA,
        seed=snow.seed,
        make_credentials=snow.make_credentials,
    )
    store.transact(snow.upgrade)  # a file from before companies and contacts gains them
    return store


def _error_response(request: Request, exc: Exception) -> Response:
    extra = getattr(request.state, "snow_headers", {})
    if isinstance(exc, snow.SnowError):
        return JSONResponse(exc.body, exc.status, {**extra, **exc.headers}, media_type=_JSON)
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        detail = f"Method {request.method} is not supported for {request.url.path}"
        error = snow.failure(405, "Method not Supported", detail)
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        error = snow.failure(400, "Requested URI does not represent any resource", None)
    else:
        error = snow.failure(500, "Internal server error", "An unexpected error occurred")
    return JSONResponse(error.body, error.status, media_type=_JSON)


def create_app(home: Path) -> SandboxApp:
    """Build the ServiceNow sandbox over ``home/sandboxes/servicenow.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app. Mount it anywhere: reference links it returns carry the mount prefix.
    """
    store = _open_store(home)
    control = ServiceNowControl(ServiceNowProfile())
    api = _ServiceNowApi(store, control)
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/{table}", api.list_records, ["GET"]),
        ("/{table}", api.create, ["POST"]),
        ("/{table}/{sys_id}", api.get_one, ["GET"]),
        ("/{table}/{sys_id}", api.update, ["PUT", "PATCH"]),
        ("/{table}/{sys_id}", api.delete, ["DELETE"]),
    ]
    routes = [Route("/oauth_token.do", api.token, methods=["POST"])]
    routes += [
        Route(prefix + path, handler, methods=methods)
        for prefix in ("/api/now/table", "/api/now/v1/table", "/api/now/v2/table")
        for path, handler, methods in table
    ]
    handlers = {snow.SnowError: _error_response, HTTPException: _error_response}
    router = Starlette(routes=routes, exception_handlers={**handlers, Exception: _error_response})
    return SandboxApp(router, store, control)


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use.

    Keys: ``instance``, ``username``/``password`` (Basic auth as the admin), ``client_id``/
    ``client_secret`` (the OAuth application), ``refresh_token`` and ``access_token`` (long-lived
    dev tokens for that client and user), ``token_url_path`` and ``auth`` (a summary).
    """
    store = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
