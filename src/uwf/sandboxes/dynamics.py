"""Microsoft Dataverse Web API sandbox (Dynamics 365): Entra ID tokens, OData routes, limits.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (Dynamics 365) and Microsoft's Dataverse and
Entra documentation; docs/crms/dynamics.md lists the sources and marks what is unverified.
Two hosts of the real service live under one mount here:

- ``/login/{tenant}/oauth2/v2.0/token`` stands in for ``login.microsoftonline.com``: the
  client credentials and refresh token grants, form-urlencoded, with Entra's ``AADSTS`` bodies;
- ``/api/data/v9.2/…`` is the organisation's Web API: ``incidents`` (with their
  ``Incident_Annotation`` notes), ``annotations``, ``systemusers``, ``accounts``,
  ``contacts``, ``WhoAmI`` and ``EntityDefinitions``, with OData paging, conditional upserts
  and the per-user service protection limits.

Schema, seed data, JSON shapes, query parsing and validation live in `_dynamics_records`.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jwt
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from uwf.sandboxes._common import Json, public_base_url, utc_iso
from uwf.sandboxes._dynamics_records import (
    API,
    BUSINESS_UNIT_ID,
    ENTITIES,
    INCIDENT,
    ORG_URL,
    ORGANIZATION_ID,
    SCHEMA,
    TENANT_DOMAIN,
    DynamicsError,
    Entity,
    FreshSecrets,
    access_claims,
    attribute_json,
    check_duplicates,
    entity_definition_json,
    etag,
    find_row,
    guid,
    make_credentials,
    mint_token,
    parse_query,
    read_token,
    record_json,
    seed,
    select_rows,
    validate_changes,
    write_row,
)
from uwf.sandboxes._harness import ControlError, SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._store import SandboxStore, get_meta

__all__ = ["DynamicsControl", "DynamicsProfile", "create_app", "credentials"]

TOKEN_TTL_SECONDS = 3599  # what Entra grants for client credentials: an hour less a second
WINDOW_S = 300.0  # service protection limits count over a sliding 5-minute window, per user
MAX_PAGE_SIZE = 5000
_WHOAMI = "Microsoft.Dynamics.CRM.WhoAmIResponse"
Key = str | tuple[str, str]  # a primary key, or (alternate key column, value)

# --------------------------------------------------------------------------- harness plug-ins


def _throttled(code: str, message: str, retry_after: int) -> DynamicsError:
    return DynamicsError(429, code, message, {"Retry-After": str(retry_after)})


def _too_many(limit: int, window: int) -> str:
    return f"Number of requests exceeded the limit of {limit} over time window of {window} seconds."


def _error_response(exc: DynamicsError) -> Response:
    return JSONResponse(exc.body, exc.status, {"OData-Version": "4.0", **exc.headers})


class DynamicsProfile:
    """Dataverse's limits and canned failures for the shared harness.

    Dataverse has no per-minute organisation limit: its limits are per user over a sliding
    5-minute window, enforced by the routes (`service_protection_requests` sets the request
    count through `_control`). The harness's account window only bites when a test lowers it.
    """

    crm = "dynamics"
    rate_limit_per_minute = 100_000
    keyed_limits: Mapping[str, KeyedLimit] = {
        "service_protection_requests": KeyedLimit(default=6000, window_s=WINDOW_S)
    }
    injectable_statuses = frozenset({429, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        return []  # the x-ms-ratelimit-* headers are per user: the routes add them

    def rate_limited(self, decision: LimitDecision) -> Response:
        message = _too_many(decision.limit, 60)
        return _error_response(_throttled("0x80072322", message, decision.reset_s))

    def injected_error(self, status: int) -> Response:
        # Retry-After: 1 keeps fault-injection runs fast while proving clients honour it.
        if status == 429:
            return _error_response(_throttled("0x80072322", _too_many(6000, 300), 1))
        if status == 500:
            error = DynamicsError(500, "0x80040216", "An unexpected error occurred.")
            return _error_response(error)
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[status]
        return PlainTextResponse(reason, status, {"Retry-After": "1"} if status == 503 else None)


class DynamicsControl(SandboxControl):
    """`_control` plus Dataverse's own settings and the token endpoint's statistics.

    The shared control knows only keyed request limits, so token lifetime, concurrency and
    execution time are extra keys, validated before anything changes and reset by DELETE.
    """

    EXTRA: Mapping[str, int] = {
        "token_ttl_seconds": TOKEN_TTL_SECONDS,
        "concurrent_request_limit": 52,
        "execution_time_limit_ms": 1_200_000,  # 20 minutes of combined execution time
    }

    def reset(self) -> None:
        super().reset()
        self.extra = dict(self.EXTRA)
        self.token_requests: Counter[str] = Counter()
        self.token_failures = 0
        self.in_flight: Counter[str] = Counter()
        self.spent: dict[str, deque[tuple[float, float]]] = {}  # user → (end, duration ms)

    def settings(self) -> Json:
        return {**super().settings(), **self.extra}

    def update(self, body: Any) -> None:
        extra = {k: v for k, v in body.items() if k in self.EXTRA} if isinstance(body, dict) else {}
        for key, value in extra.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ControlError(key, f"{key} must be an integer >= 1")
        super().update({k: v for k, v in body.items() if k not in extra} if extra else body)
        self.extra.update(extra)

    def snapshot(self) -> Json:
        snapshot = super().snapshot()
        stats = snapshot["stats"]
        stats["token_requests"] = sum(self.token_requests.values())  # failed ones included
        stats["token_requests_by_grant_type"] = dict(sorted(self.token_requests.items()))
        stats["token_requests_failed"] = self.token_failures
        return snapshot

    def spent_ms(self, user: str, now: float, add: float = 0.0) -> float:
        """Execution time of ``user`` within the trailing window, after recording ``add`` ms."""
        events = self.spent.setdefault(user, deque())
        if add:
            events.append((now, add))
        while events and events[0][0] <= now - WINDOW_S:
            events.popleft()
        return sum(duration for _, duration in events)


# --------------------------------------------------------------------------- Entra ID


class _EntraError(Exception):
    """A token endpoint error, in Entra's OAuth body (`error` and an `AADSTS…` description)."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.code, self.message = status, error, code, message

    def response(self) -> Response:
        trace, correlation, stamp = uuid.uuid4(), uuid.uuid4(), utc_iso().replace("T", " ")
        description = (f"AADSTS{self.code}: {self.message}\r\nTrace ID: {trace}\r\n"
                       f"Correlation ID: {correlation}\r\nTimestamp: {stamp}")  # fmt: skip
        body = {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return JSONResponse(body, self.status, {"Cache-Control": "no-store, no-cache"})


def _missing(name: str) -> _EntraError:
    message = f"The request body must contain the following parameter: '{name}'."
    return _EntraError(400, "invalid_request", 900144, message)


def _check_scope(grant: str, scope: str) -> None:
    for item in scope.split():
        resource = item.rsplit("/", 1)[0].rstrip("/")
        if grant == "client_credentials" and not item.endswith("/.default"):
            raise _EntraError(400, "invalid_scope", 1002012, f"The provided value for scope "
                              f"{item} is not valid. Client credential flows must have a scope "
                              "value with /.default suffixed to the resource identifier "
                              "(application ID URI).")  # fmt: skip
        if resource != ORG_URL and item not in ("openid", "profile", "offline_access"):
            raise _EntraError(400, "invalid_resource", 500011, f"The resource principal named "
                              f"{resource} was not found in the tenant named {TENANT_DOMAIN}. "
                              "This can happen if the application has not been installed by "
                              "the administrator of the tenant or consented to by any user in "
                              "the tenant.")  # fmt: skip


class _Login:
    """The tenant's ``/oauth2/v2.0/token`` endpoint (client credentials, refresh token)."""

    def __init__(self, store: SandboxStore, control: DynamicsControl, fresh: FreshSecrets):
        self.store, self.control, self.fresh = store, control, fresh

    async def token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        form_type = "application/x-www-form-urlencoded"
        is_form = request.headers.get("content-type", "").startswith(form_type)
        form = {k: v[0] for k, v in parse_qs(raw).items()} if is_form else {}
        self.control.token_requests[form.get("grant_type") or "(none)"] += 1
        try:
            body = await self._grant(request.path_params["tenant"], form)
        except _EntraError as exc:
            self.control.token_failures += 1
            return exc.response()
        return JSONResponse(body, headers={"Cache-Control": "no-store, no-cache"})

    async def _grant(self, tenant: str, form: dict[str, str]) -> Json:
        fresh, grant = self.fresh, form.get("grant_type", "")
        if tenant not in (fresh.tenant_id, TENANT_DOMAIN):
            raise _EntraError(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. "
                              "Check to make sure you have the correct tenant ID and are "
                              "signing into the correct cloud.")  # fmt: skip
        for name in ("grant_type", "client_id"):
            if not form.get(name):
                raise _missing(name)
        if grant not in ("client_credentials", "refresh_token"):
            message = f"The app requested an unsupported grant type '{grant}'."
            raise _EntraError(400, "unsupported_grant_type", 70003, message)
        if form["client_id"] != fresh.client_id:
            raise _EntraError(400, "unauthorized_client", 700016, "Application with identifier "
                              f"'{form['client_id']}' was not found in the directory "
                              f"'{TENANT_DOMAIN}'. This can happen if the application has not "
                              "been installed by the administrator of the tenant or consented "
                              "to by any user in the tenant. You may have sent your "
                              "authentication request to the wrong tenant.")  # fmt: skip
        secret = form.get("client_secret")
        if secret is None and grant == "client_credentials":
            raise _EntraError(401, "invalid_client", 7000218, "The request body must contain "
                              "the following parameter: 'client_assertion' or "
                              "'client_secret'.")  # fmt: skip
        if secret is not None and not secrets.compare_digest(secret, fresh.client_secret):
            raise _EntraError(401, "invalid_client", 7000215, "Invalid client secret provided. "
                              "Ensure the secret being sent in the request is the client secret "
                              "value, not the client secret ID, for a secret added to app "
                              f"'{fresh.client_id}'.")  # fmt: skip
        _check_scope(grant, form.get("scope", ""))
        ttl = self.control.extra["token_ttl_seconds"]
        if grant == "client_credentials":
            if not form.get("scope"):
                raise _missing("scope")
            token = mint_token(fresh.signing_key, access_claims(fresh, guid("aad", "app"), ttl))
            return {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
                    "access_token": token}  # fmt: skip
        if not form.get("refresh_token"):
            raise _missing("refresh_token")
        oid, user, rotated = await self.store.run(self._rotate, form["refresh_token"])
        token = mint_token(fresh.signing_key, access_claims(fresh, oid, ttl, user))
        scope = f"{ORG_URL}/user_impersonation {ORG_URL}/.default"
        return {"token_type": "Bearer", "scope": scope, "expires_in": ttl, "ext_expires_in": ttl,
                "access_token": token, "refresh_token": rotated}  # fmt: skip

    def _rotate(self, conn: sqlite3.Connection, old: str) -> tuple[str, str, str]:
        """A new refresh token for the old one's user; like Entra, the old one stays valid."""
        row = conn.execute("SELECT * FROM refresh_token WHERE token = ?", (old,)).fetchone()
        if row is None or row["client_id"] != self.fresh.client_id:
            message = "Invalid request. Request is malformed or invalid."
            raise _EntraError(400, "invalid_grant", 9002313, message)
        if row["expires_at"] < time.time():
            raise _EntraError(400, "invalid_grant", 700082, "The refresh token has expired due "
                              f"to inactivity. The token was issued on {utc_iso(row['issued_at'])}"
                              " and was inactive for 90.00:00:00.")  # fmt: skip
        sql = "SELECT internalemailaddress FROM systemuser WHERE azureactivedirectoryobjectid = ?"
        user = conn.execute(sql, (row["oid"],)).fetchone()
        new, now = "0.A" + secrets.token_urlsafe(96), time.time()
        values = (new, row["client_id"], row["oid"], now, now + 90 * 86400)
        conn.execute("INSERT INTO refresh_token VALUES (?, ?, ?, ?, ?)", values)
        return str(row["oid"]), str(user[0] if user else ""), new


# --------------------------------------------------------------------------- OData plumbing

_GUID_KEY = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
# `<guid>`, `incidentid=<guid>` or `<alternate key>='<string>'` ('' escapes a quote).
_KEY = re.compile(
    rf"(?P<guid>{_GUID_KEY})|(?P<name>\w+)=(?:'(?P<str>(?:[^']|'')*)'|(?P<g>{_GUID_KEY}))"
)


@dataclass(frozen=True, slots=True)
class _Caller:
    user_id: str


def _segments(path: str) -> list[tuple[str, str | None]]:
    """``incidents(uwf_key='a/b')/Incident_Annotation`` → ``[(incidents, "uwf_key='a/b'"), …]``."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in path.strip("/"):
        quoted ^= char == "'"
        depth += 0 if quoted else (char == "(") - (char == ")")
        if char == "/" and not depth and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    segments: list[tuple[str, str | None]] = []
    for part in [*parts, current]:
        name, paren, rest = part.partition("(")
        segments.append((name, rest[:-1] if paren and rest.endswith(")") else None))
    return segments


def _parse_key(entity: Entity, text: str) -> Key:
    match = _KEY.fullmatch(text)
    if match and (match["guid"] or (match["name"] == entity.pk and match["g"])):
        return str(match["guid"] or match["g"]).lower()
    if match and match["name"] in entity.alternate_keys and match["str"] is not None:
        return match["name"], match["str"].replace("''", "'")
    raise DynamicsError(400, "0x0", f"The key in the request URI is not valid for resource "
                        f"'{entity.type_name}'. Ensure that the names and number of key "
                        "properties match the declared or alternate key properties for the "
                        f"resource '{entity.type_name}'.")  # fmt: skip


def _missing_row(entity: Entity, key: Key) -> DynamicsError:
    if isinstance(key, tuple):
        message = "A record with the specified key values does not exist in "
        message += f"{entity.logical} entity"
        return DynamicsError(404, "0x80060891", message)
    return DynamicsError(404, "0x80040217", f"{entity.logical} With Id = {key} Does Not Exist")


def _prefer(request: Request) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            prefs[name.strip()] = value.strip().strip('"')
    return prefs


def _check_odata_headers(request: Request) -> None:
    version, highest = request.headers.get("odata-version"), request.headers.get("odata-maxversion")
    if version is not None and version.strip() not in ("4.0", "4.01"):
        raise DynamicsError(400, "0x0", f"The value '{version}' of the OData-Version HTTP header "
                            "is invalid. Only '4.0' and '4.01' are supported as values for the "
                            "OData-Version header.")  # fmt: skip
    if highest is not None and not re.fullmatch(r"\s*(4\.01?|[5-9](\.\d+)?)\s*", highest):
        raise DynamicsError(400, "0x0", f"The value '{highest}' of the OData-MaxVersion HTTP "
                            "header is lower than the service's OData version '4.0'.")  # fmt: skip


def _if_header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)  # `If-None-Match: null` is what clients send for "none"
    return None if value is None or value.strip() == "null" else value.strip()


def _no_segment(segment: str) -> DynamicsError:
    message = f"Resource not found for the segment '{segment}'."
    return DynamicsError(404, "0x8006088a", message)


def _duplicate() -> DynamicsError:
    return DynamicsError(412, "0x80040237", "A record with matching key values already exists.")


# --------------------------------------------------------------------------- the Web API


class _DataverseApi:
    """Route handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: DynamicsControl, key: str, tenant: str):
        self.store, self.control, self.key, self.tenant = store, control, key, tenant

    async def authenticate(self, request: Request) -> _Caller:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        message = "The request is not authenticated: a Bearer access token is required."
        if scheme.lower() == "bearer" and token.strip():
            try:
                claims = read_token(self.key, token.strip())
            except jwt.ExpiredSignatureError:
                message = "The access token has expired (ExpiredAuthTicket)."
            except jwt.InvalidTokenError:
                message = "The access token is not valid here (InvalidAuthTicket)."
            else:
                sql = ("SELECT systemuserid FROM systemuser "
                       "WHERE azureactivedirectoryobjectid = ? AND isdisabled = 0")  # fmt: skip
                row = await self.store.run(lambda c: c.execute(sql, (claims["oid"],)).fetchone())
                if row is not None and claims["tid"] == self.tenant:
                    return _Caller(str(row[0]))
                message = "The user is not a member of the organization (UnauthorizedAccess)."
        authority = f"{public_base_url(request)}/login/{self.tenant}/oauth2/authorize"
        challenge = f"Bearer authorization_uri={authority}, resource_id={ORG_URL}/"
        raise DynamicsError(401, "", message, {"WWW-Authenticate": challenge})

    async def dispatch(self, request: Request) -> Response:
        """Every Web API request: OData headers, auth, service protection, then the route."""
        started, caller, remaining = time.monotonic(), None, None
        try:
            _check_odata_headers(request)
            caller = await self.authenticate(request)
            remaining = self._admit(caller.user_id)
            self.control.in_flight[caller.user_id] += 1
            try:
                response = await self._route(request, caller)
            finally:
                self.control.in_flight[caller.user_id] -= 1
        except DynamicsError as exc:
            response = _error_response(exc)
        response.headers["OData-Version"] = "4.0"
        response.headers["x-ms-service-request-id"] = str(uuid.uuid4())
        if caller is not None:
            now, limit = time.monotonic(), self.control.extra["execution_time_limit_ms"]
            spent = self.control.spent_ms(caller.user_id, now, (now - started) * 1000)
            left = f"{max(0.0, limit - spent) / 1000:.2f}"
            response.headers["x-ms-ratelimit-time-remaining-xrm-requests"] = left
            if remaining is not None:
                response.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = str(remaining)
        return response

    def _admit(self, user: str) -> int | None:
        """Dataverse's three per-user limits; returns the requests left in the window."""
        extra = self.control.extra
        if self.control.in_flight[user] >= (limit := extra["concurrent_request_limit"]):
            message = f"Number of concurrent requests exceeded the limit of {limit}."
            raise _throttled("0x80072326", message, 1)
        ms = extra["execution_time_limit_ms"]
        if self.control.spent_ms(user, time.monotonic()) >= ms:
            raise _throttled("0x80072321", f"Combined execution time of incoming requests "
                             f"exceeded limit of {ms:,} milliseconds over time window of 300 "
                             "seconds. Decrease number of concurrent requests or reduce the "
                             "duration of requests and try again later.", 30)  # fmt: skip
        decision = self.control.check_keyed("service_protection_requests", user)
        if not decision.allowed:
            message = _too_many(decision.limit, int(WINDOW_S))
            raise _throttled("0x80072322", message, decision.reset_s)
        return decision.remaining if decision.limit else None

    async def _route(self, request: Request, caller: _Caller) -> Response:
        method, segments = request.method, _segments(request.path_params["path"])
        (head, key), rest = segments[0], segments[1:]
        if head == "WhoAmI" and method == "GET" and not rest and key in (None, ""):
            return JSONResponse(
                {
                    "@odata.context": f"{public_base_url(request)}{API}/$metadata#{_WHOAMI}",
                    "BusinessUnitId": BUSINESS_UNIT_ID,
                    "UserId": caller.user_id,
                    "OrganizationId": ORGANIZATION_ID,
                }
            )
        if head == "EntityDefinitions" and method == "GET":
            return self._metadata(request, key, rest)
        entity = ENTITIES.get(head)
        if entity is None and head not in ("WhoAmI", "EntityDefinitions"):
            raise _no_segment(head)
        if entity is None:
            pass  # a function or metadata set called with the wrong method
        elif key is None and not rest and method in ("GET", "POST"):
            if method == "GET":
                return await self._list(request, entity)
            if entity.writable:
                return await self._write(request, caller, entity, None)
        elif key is not None:
            parsed = _parse_key(entity, key)
            if entity is INCIDENT and rest == [("Incident_Annotation", None)] and method == "GET":
                return await self._list(request, ENTITIES["annotations"], parsed)
            if rest:
                raise _no_segment(rest[0][0])
            if method == "GET":
                return await self._read(request, entity, parsed)
            if method == "PATCH" and entity.writable:
                return await self._write(request, caller, entity, parsed)
        message = f"No HTTP resource was found that matches the request URI '{request.url}'."
        raise DynamicsError(404, "", message)

    async def _list(self, request: Request, entity: Entity, parent: Key | None = None) -> Response:
        params, prefer = request.query_params, _prefer(request)
        query = parse_query(entity, params)
        wanted = prefer.get("odata.maxpagesize", "")
        size = min(int(wanted), MAX_PAGE_SIZE) if wanted.isdigit() and int(wanted) else None
        page = 1
        if token := params.get("$skiptoken"):
            if (found := re.search(r'pagenumber="(\d+)"', token)) is None:
                raise DynamicsError(400, "0x0", f"The $skiptoken '{token}' is not valid.")
            page = int(found.group(1))
        paged = size is not None or query.top is None  # a page size wins over $top
        limit = (size or MAX_PAGE_SIZE) if paged else min(query.top or 0, MAX_PAGE_SIZE)

        def work(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool]:
            scope: tuple[str, tuple[Any, ...]] = ("1", ())
            if parent is not None:  # incidents(<key>)/Incident_Annotation
                if (case := find_row(conn, INCIDENT, parent)) is None:
                    raise _missing_row(INCIDENT, parent)
                scope = ("objectid = ?", (case["incidentid"],))
            return select_rows(conn, entity, query, (page - 1) * limit, limit, scope)

        rows, more = await self.store.run(work)
        columns = f"({','.join(a.key for a in query.select)})" if query.select else ""
        context = f"{public_base_url(request)}{API}/$metadata#{entity.set_name}{columns}"
        body: Json = {"@odata.context": context}
        body["value"] = [record_json(entity, row, query.select) for row in rows]
        if more and paged:
            # A paging cookie like Dataverse's: the page number plus the first and last keys.
            first, last = (f"{{{row[entity.pk].upper()}}}" for row in (rows[0], rows[-1]))
            inner = f'<cookie page="{page}"><{entity.pk} last="{last}" first="{first}" /></cookie>'
            cookie = quote(inner, safe="")  # encoded inside the token, then again in the URL
            token = f'<cookie pagenumber="{page + 1}" pagingcookie="{cookie}" istracking="False" />'
            body["@odata.nextLink"] = str(request.url.include_query_params(**{"$skiptoken": token}))
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if size else None
        return JSONResponse(body, headers=headers)

    async def _read(self, request: Request, entity: Entity, key: Key) -> Response:
        query = parse_query(entity, request.query_params)
        if (row := await self.store.run(find_row, entity, key)) is None:
            raise _missing_row(entity, key)
        if _if_header(request, "if-none-match") == etag(row):  # conditional retrieval
            return Response(status_code=304)
        return self._entity(request, entity, row, query.select, 200)

    def _entity(
        self, request: Request, entity: Entity, row: Mapping[str, Any], select: Any, status: int
    ) -> Response:
        columns = f"({','.join(a.key for a in select)})" if select else ""
        context = f"{public_base_url(request)}{API}/$metadata#{entity.set_name}{columns}/$entity"
        body = {"@odata.context": context, **record_json(entity, row, select)}
        headers = {"ETag": etag(row)}
        if request.method != "GET":
            headers["Preference-Applied"] = "return=representation"
        return JSONResponse(body, status, headers)

    async def _write(
        self, request: Request, caller: _Caller, entity: Entity, key: Key | None
    ) -> Response:
        """POST (create), PATCH (update, or upsert unless `If-Match`/`If-None-Match` say).

        `MSCRM.SuppressDuplicateDetection: false` applies the duplicate detection rules.
        """
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise DynamicsError(400, "0x80048d19", "Error identified in Payload provided by the "
                                f"user for Entity :'{entity.set_name}'  ---->  InnerException : "
                                "Microsoft.OData.ODataException: Invalid JSON. A JSON object "
                                "was expected.")  # fmt: skip
        base, query = public_base_url(request), parse_query(entity, request.query_params)
        if_match, if_none = _if_header(request, "if-match"), _if_header(request, "if-none-match")
        detect = request.headers.get("mscrm.suppressduplicatedetection", "").lower() == "false"

        def work(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            current, target = None if key is None else find_row(conn, entity, key), key
            if current is None and if_match is not None:  # If-Match: * — update only
                raise _missing_row(entity, key or "")
            if current is not None and if_none == "*":  # If-None-Match: * — create only
                raise _duplicate()
            if current is not None and if_match not in (None, "*", etag(current)):
                raise DynamicsError(412, "0x80060882", "The version of the existing record "
                                    "doesn't match the RowVersion property provided.")  # fmt: skip
            changes = validate_changes(conn, entity, body, current is None, base)
            if key is None and entity.pk in changes:  # a client may choose the new record's id
                target = changes.pop(entity.pk)
                if find_row(conn, entity, target) is not None:
                    raise _duplicate()
            changes.pop(entity.pk, None)  # on PATCH the key in the URL decides
            if detect:  # duplicate detection runs only when a request asks for it
                check_duplicates(conn, entity, current, changes)
            if isinstance(key, tuple) and current is not None:
                changes.pop(key[0], None)  # an upsert never changes the key it matched on
            try:
                row = write_row(conn, entity, current, changes, caller.user_id, target)
            except sqlite3.IntegrityError:  # the unique index behind the uwf_key alternate key
                raise DynamicsError(412, "0x80060892", "A record that has the attribute values "
                                    f"{changes.get('uwf_key')} already exists. The entity key "
                                    "uwf_key requires that this set of attributes contains "
                                    "unique values. Select unique values and try "
                                    "again.") from None  # fmt: skip
            return row, current is None

        row, created = await self.store.run(work)
        mark_write(request)
        if _prefer(request).get("return") == "representation":
            return self._entity(request, entity, row, query.select, 201 if created else 200)
        if isinstance(key, tuple):  # an alternate-key upsert answers with the key it was given
            address = f"{entity.set_name}({key[0]}='{key[1].replace(chr(39), chr(39) * 2)}')"
        else:
            address = f"{entity.set_name}({row[entity.pk]})"
        return Response(status_code=204, headers={"OData-EntityId": f"{base}{API}/{address}"})

    def _metadata(
        self, request: Request, key: str | None, rest: list[tuple[str, str | None]]
    ) -> Response:
        """``EntityDefinitions(LogicalName='incident')/Attributes(LogicalName='x')/…``."""
        context = f"{public_base_url(request)}{API}/$metadata#EntityDefinitions"
        params = request.query_params
        if key is None:
            value = [entity_definition_json(e) for e in ENTITIES.values()]
            return JSONResponse({"@odata.context": context, "value": value})
        logical = re.fullmatch(r"LogicalName='(\w+)'", key)
        entity = next((e for e in ENTITIES.values() if logical and e.logical == logical[1]), None)
        if entity is None:
            raise DynamicsError(404, "0x80040217", f"Could not find entity with key '{key}'.")
        if not rest:
            definition = entity_definition_json(entity)
            return JSONResponse({"@odata.context": f"{context}/$entity", **definition})
        (segment, attribute), tail = rest[0], [name for name, _ in rest[1:]]
        attrs = entity.attr_list
        if attribute is not None:
            wanted = re.fullmatch(r"LogicalName='(\w+)'", attribute)
            attrs = tuple(a for a in attrs if wanted and a.name == wanted[1])
        if segment != "Attributes" or not attrs:
            raise _no_segment(segment)
        if tail and tail[0].startswith("Microsoft.Dynamics.CRM."):  # a cast to one type
            cast = "#" + tail.pop(0)
            attrs = tuple(a for a in attrs if attribute_json(entity, a)["@odata.type"] == cast)
        expand = "OptionSet" in params.get("$expand", "") or tail == ["OptionSet"]
        items = [attribute_json(entity, a, expand) for a in attrs]
        if selected := {s.strip() for s in params.get("$select", "").split(",") if s.strip()}:
            keep = {"@odata.type", "MetadataId", "OptionSet", *selected}
            items = [{k: v for k, v in item.items() if k in keep} for item in items]
        if tail == ["OptionSet"] and len(items) == 1 and "OptionSet" in items[0]:
            option_set = items[0]["OptionSet"]
            return JSONResponse({"@odata.context": f"{context}/OptionSet/$entity", **option_set})
        if tail:
            raise _no_segment(tail[0])
        if attribute is not None and items:
            return JSONResponse({"@odata.context": f"{context}/Attributes/$entity", **items[0]})
        return JSONResponse({"@odata.context": f"{context}/Attributes", "value": items})


# --------------------------------------------------------------------------- app factory


def _open_store(home: Path) -> tuple[SandboxStore, FreshSecrets]:
    """The store, and its secrets; a brand-new file is seeded with freshly drawn ones."""
    fresh = FreshSecrets()
    store = SandboxStore(
        home / "sandboxes" / "dynamics.sqlite3",
        schema=SCHEMA,
        seed=partial(seed, fresh),
        make_credentials=partial(make_credentials, fresh),
    )
    creds, key = store.credentials, store.transact(lambda c: get_meta(c, "token_signing_key"))
    kept = FreshSecrets(creds["tenant_id"], creds["client_id"], creds["client_secret"], str(key),
                        creds["refresh_token"])  # fmt: skip
    return store, kept


def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        return _error_response(_no_segment(request.url.path.rstrip("/").rsplit("/", 1)[-1]))
    return _error_response(DynamicsError(500, "0x80040216", "An unexpected error occurred."))


def create_app(home: Path) -> SandboxApp:
    """Build the Dataverse sandbox over ``home/sandboxes/dynamics.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app: the Web API under ``/api/data/v9.2`` and the Entra ID token endpoint at
        ``/login/{tenant}/oauth2/v2.0/token``. Mount it anywhere.
    """
    store, fresh = _open_store(home)
    control = DynamicsControl(DynamicsProfile())
    api = _DataverseApi(store, control, fresh.signing_key, fresh.tenant_id)
    token = _Login(store, control, fresh).token
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    routes = [
        Route("/login/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route(API + "/{path:path}", api.dispatch, methods=methods),
    ]
    handlers = {HTTPException: _unexpected, Exception: _unexpected}
    return SandboxApp(Starlette(routes=routes, exception_handlers=handlers), store, control)


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use.

    Returns:
        ``tenant_id``, ``client_id``, ``client_secret``, ``scope``, ``token_path`` (under the
        sandbox's base URL), ``refresh_token`` (the admin user's, for the refresh grant),
        ``access_token`` (an app token valid for ten years), ``org_url`` and ``api_path``.
    """
    store, _ = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
