"""Salesforce REST API sandbox: OAuth 2.0 token endpoint, sObject rows, describe, SOQL, limits.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (Salesforce), the sObjects OpenAPI document and
Salesforce's Postman collection in ``shared/crm-specs/salesforce`` and developer.salesforce.com.
Paths are those of an org's instance URL (``/services/data/v59.0/…``, ``/services/oauth2/token``)
under the mount prefix; record URLs in bodies (``attributes.url``, ``nextRecordsUrl``) are
relative to the instance URL, as Salesforce's are. Where Salesforce's exact wording is unknown,
docs/crms/salesforce.md marks the body as unverified. Schema, seed data, JSON shapes,
validation and SOQL live in `_salesforce_records`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import jwt
from cryptography import x509
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from uwf.sandboxes._common import Json, public_base_url
from uwf.sandboxes._harness import SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._salesforce_records import (
    API_VERSION,
    INTEGRATION_USERNAME,
    OBJECTS,
    ORG_ID,
    QUICKSTART_CASE_ID,
    QUICKSTART_CASE_NUMBER,
    SCHEMA,
    USERS,
    Query,
    SalesforceError,
    SObjectDef,
    describe_json,
    find_by_field,
    insert_record,
    load,
    make_credentials,
    no_such_column,
    normalize_id,
    not_found,
    query_records,
    record_json,
    run_query,
    seed,
    sf_id,
    sobject_info,
    update_record,
    validate_write,
)
from uwf.sandboxes._store import SandboxStore, next_id

__all__ = [
    "INTEGRATION_USERNAME",
    "QUICKSTART_CASE_ID",
    "QUICKSTART_CASE_NUMBER",
    "USERS",
    "SalesforceProfile",
    "create_app",
    "credentials",
]

DEFAULT_TOKEN_TTL = 7200  # Salesforce's default session timeout: 2 hours
DEFAULT_DAILY_LIMIT = 100_000  # an Enterprise org's base allocation (unverified)
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_VERSIONS = (("Spring '23", "57.0"), ("Summer '23", "58.0"), ("Winter '24", API_VERSION))
_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")

# --------------------------------------------------------------------------- profile


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code}], status_code=status)


def _limit_exceeded() -> SalesforceError:
    return SalesforceError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


class SalesforceProfile:
    """Salesforce's limits and failure bodies for the shared harness.

    Salesforce has no per-minute limit: it counts API requests per org over 24 hours and
    reports them in ``Sforce-Limit-Info``. The harness's per-minute window is left wide open
    (tests may narrow it through `_control` to simulate throttling); the daily allocation is
    the keyed limit ``daily_api_requests``. ``token_ttl_seconds`` is a keyed "limit" too: the
    harness's one way to take a CRM-specific `_control` key (null means the 2-hour default).
    """

    @property
    def crm(self) -> str:
        return "salesforce"

    @property
    def rate_limit_per_minute(self) -> int:
        return 1_000_000

    @property
    def keyed_limits(self) -> Mapping[str, KeyedLimit]:
        return {
            "daily_api_requests": KeyedLimit(default=DEFAULT_DAILY_LIMIT, window_s=86400.0),
            "token_ttl_seconds": KeyedLimit(default=DEFAULT_TOKEN_TTL, window_s=1.0),
        }

    @property
    def injectable_statuses(self) -> frozenset[int]:
        return frozenset({403, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        return []  # Sforce-Limit-Info is added by the API routes, which count the daily limit

    def rate_limited(self, decision: LimitDecision) -> Response:
        return _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def injected_error(self, status: int) -> Response:
        if status == 403:
            return self.rate_limited(LimitDecision(False, 0, 0, 1))
        if status == 500:
            message = (
                "An unexpected error occurred. Please include this ErrorId if you contact "
                "support: 1094862421-13867 (-1406306339)"
            )
            return _error(500, "UNKNOWN_EXCEPTION", message)
        if status == 503:
            message = "Server is temporarily unavailable, please try again later."
            return _error(503, "SERVER_UNAVAILABLE", message)
        reason = {502: "Bad Gateway", 504: "Gateway Timeout"}.get(status, "Server Error")
        return PlainTextResponse(f"{status} {reason}", status_code=status)


class _Control(SandboxControl):
    """The shared control plus the token endpoint's counters (``stats.token_requests``)."""

    def reset(self) -> None:
        super().reset()
        self.token_requests: Counter[str] = Counter()

    def snapshot(self) -> Json:
        snapshot = super().snapshot()
        snapshot["stats"]["token_requests"] = sum(self.token_requests.values())
        by_grant = dict(sorted(self.token_requests.items()))
        snapshot["stats"]["token_requests_by_grant_type"] = by_grant
        return snapshot

    @property
    def token_ttl(self) -> int:
        ttl = self.keyed.get("token_ttl_seconds")
        return DEFAULT_TOKEN_TTL if ttl is None else ttl


# --------------------------------------------------------------------------- OAuth 2.0


class _OAuthError(Exception):
    """The token endpoint's error body: ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error, description)
        self.error, self.description, self.status = error, description, status


def _issue(conn: sqlite3.Connection, kind: str, user_id: str, ttl: int | None, parent: Any) -> str:
    token = secrets.token_urlsafe(72) if kind == "access" else "5Aep861" + secrets.token_hex(40)
    token = f"{ORG_ID[:15]}!{token}" if kind == "access" else token
    now = time.time()
    conn.execute(
        "INSERT INTO oauth_tokens (token, kind, user_id, parent, issued_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (token, kind, user_id, parent, now, None if ttl is None else now + ttl),
    )
    return token


def _active_user(conn: sqlite3.Connection, username: str) -> str | None:
    ids = find_by_field(conn, OBJECTS["user"], "Username", username)
    found = load(conn, ids[0]) if ids else None
    return str(found[1]["Id"]) if found and found[1]["IsActive"] else None


class _OAuth:
    """``/services/oauth2/token`` with the grants a server integration uses, and revocation."""

    def __init__(self, store: SandboxStore, control: _Control) -> None:
        self.store, self.control = store, control
        self.creds = store.credentials
        certificate = x509.load_pem_x509_certificate(self.creds["certificate_pem"].encode())
        self.public_key = certificate.public_key()

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        grant = form.get("grant_type", "")
        self.control.token_requests[grant or "(none)"] += 1
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":  # client credentials may come as HTTP Basic
            try:
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = secret = ""
            form.setdefault("client_id", client_id)
            form.setdefault("client_secret", secret)
        base = public_base_url(request)
        try:
            body = await self.store.run(self._grant, grant, form, base)
        except _OAuthError as exc:
            error = {"error": exc.error, "error_description": exc.description}
            return JSONResponse(error, exc.status, headers={"Cache-Control": "no-store"})
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _client(self, form: Mapping[str, str], *, secret_required: bool) -> None:
        if not hmac.compare_digest(
            form.get("client_id", "").encode(), self.creds["client_id"].encode()
        ):
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        secret = form.get("client_secret")
        if (secret_required or secret) and not hmac.compare_digest(
            (secret or "").encode(), self.creds["client_secret"].encode()
        ):
            raise _OAuthError("invalid_client", "invalid client credentials")

    def _grant(
        self, conn: sqlite3.Connection, grant: str, form: Mapping[str, str], base: str
    ) -> Json:
        refresh: str | None = None
        if grant == "password":
            self._client(form, secret_required=True)
            user_id = _active_user(conn, form.get("username", ""))
            expected = self.creds["password"] + self.creds["security_token"]
            known = form.get("username") == INTEGRATION_USERNAME
            if (
                user_id is None
                or not known
                or not hmac.compare_digest(form.get("password", "").encode(), expected.encode())
            ):
                raise _OAuthError("invalid_grant", "authentication failure")
        elif grant == "client_credentials":
            self._client(form, secret_required=True)
            user_id = self.creds["user_id"]  # the connected app's "run as" user
        elif grant == "refresh_token":
            self._client(form, secret_required=False)
            row = conn.execute(
                "SELECT user_id FROM oauth_tokens WHERE token = ? AND kind = 'refresh' "
                "AND revoked = 0",
                (form.get("refresh_token", ""),),
            ).fetchone()
            if row is None:
                raise _OAuthError("invalid_grant", "expired access/refresh token")
            user_id = row["user_id"]
            # Refresh token rotation is on for the sandbox's connected app: every use returns
            # a new refresh token and invalidates the one presented.
            conn.execute(
                "UPDATE oauth_tokens SET revoked = 1 WHERE token = ?", (form["refresh_token"],)
            )
            refresh = _issue(conn, "refresh", user_id, None, None)
        elif grant == JWT_GRANT:
            user_id = self._assertion(conn, form.get("assertion", ""), base)
        else:
            raise _OAuthError("unsupported_grant_type", "grant type not supported")
        access = _issue(conn, "access", user_id, self.control.token_ttl, refresh)
        issued_at = str(int(time.time() * 1000))
        identity = f"{base}/id/{ORG_ID}/{user_id}"
        digest = hmac.new(
            self.creds["client_secret"].encode(), (identity + issued_at).encode(), hashlib.sha256
        )
        body = {
            "access_token": access, "instance_url": base, "id": identity, "token_type": "Bearer",
            "issued_at": issued_at, "signature": base64.b64encode(digest.digest()).decode(),
            "scope": "api refresh_token" if refresh else "api",
        }  # fmt: skip
        return {**body, "refresh_token": refresh} if refresh else body

    def _assertion(self, conn: sqlite3.Connection, assertion: str, base: str) -> str:
        """Check a JWT bearer assertion the way Salesforce does; returns the user's Id."""
        skip = ("exp", "aud", "iat", "nbf", "iss", "sub")
        options: Any = {f"verify_{claim}": False for claim in skip}
        try:
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"], options=options)  # type: ignore[arg-type]
        except jwt.PyJWTError:
            raise _OAuthError("invalid_grant", "invalid assertion") from None
        if claims.get("iss") != self.creds["client_id"]:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not {str(a).rstrip("/") for a in audiences} & {*_AUDIENCES, base}:
            raise _OAuthError("invalid_grant", "audience is invalid")
        try:  # some clients (simple-salesforce) send exp as a numeric string
            expired = float(claims.get("exp")) < time.time() - 5  # type: ignore[arg-type]
        except (TypeError, ValueError):
            expired = True
        if expired:
            raise _OAuthError("invalid_grant", "invalid assertion")
        user_id = _active_user(conn, str(claims.get("sub", "")))
        if user_id is None:
            raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
        return user_id

    async def revoke(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("token") or request.query_params.get("token", "")

        def work(conn: sqlite3.Connection) -> int:
            sql = "UPDATE oauth_tokens SET revoked = 1 WHERE token = ? OR parent = ?"
            return conn.execute(sql, (token, token)).rowcount

        if not token or not await self.store.run(work):
            return JSONResponse(
                {"error": "unsupported_token_type", "error_description": "invalid token"}, 400
            )
        return Response(status_code=200)


# --------------------------------------------------------------------------- the REST API


def _segments(request: Request) -> list[str]:
    """Path segments after ``/services/data``, each percent-decoded (an external id may hold /)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path, root = raw.decode("latin-1"), str(request.scope.get("root_path", ""))
    path = path[len(root) :] if root and path.startswith(root) else path
    rest = path[len("/services/data") :].strip("/")
    return [unquote(part) for part in rest.split("/")] if rest else []


async def _json_body(request: Request, obj: SObjectDef) -> Json:
    try:
        body = json.loads(await request.body())
    except json.JSONDecodeError as exc:
        message = f"Unexpected character at [line:{exc.lineno}, column:{exc.colno}]"
        raise SalesforceError(400, "JSON_PARSER_ERROR", message) from None
    if not isinstance(body, dict):
        message = f"Cannot deserialize instance of {obj.name} from {type(body).__name__} value"
        raise SalesforceError(400, "JSON_PARSER_ERROR", message)
    return body


def _not_allowed(method: str, allowed: str) -> SalesforceError:
    message = f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
    return SalesforceError(405, "METHOD_NOT_ALLOWED", message)


def _row_id(obj: SObjectDef, value: str) -> str:
    """The 18-character id a ``/sobjects/{obj}/{id}`` path names, or Salesforce's error."""
    rid = normalize_id(value, [obj.prefix])
    if rid is not None:
        return rid
    if len(value) in (15, 18) and value.isalnum():  # an id, but of another type or mistyped
        message = f"{obj.label} ID: id value of incorrect type: {value}"
        raise SalesforceError(400, "MALFORMED_ID", message, ["Id"])
    message = f"Provided external ID field does not exist or is not accessible: {value}"
    raise SalesforceError(404, "NOT_FOUND", message)


def _multiple(obj: SObjectDef, ids: list[str]) -> Response:
    """300 Multiple Choices: the URLs of every record an external id matched."""
    urls = [f"/services/data/v{API_VERSION}/sobjects/{obj.name}/{rid}" for rid in ids]
    return JSONResponse(urls, status_code=300)


def _limits(decision: LimitDecision) -> Json:
    limit = decision.limit or DEFAULT_DAILY_LIMIT
    remaining = decision.remaining if decision.limit else limit
    return {
        "DailyApiRequests": {"Max": limit, "Remaining": remaining},
        "DataStorageMB": {"Max": 1024, "Remaining": 1021},
        "FileStorageMB": {"Max": 1024, "Remaining": 1024},
    }


class _RestApi:
    """``/services/data/…`` handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: _Control) -> None:
        self.store, self.control = store, control
        self.dev_token = store.credentials["access_token"].encode()

    async def authenticate(self, request: Request) -> str:
        """The user a request's session belongs to; 401 INVALID_SESSION_ID otherwise."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("bearer", "oauth") and token:
            if hmac.compare_digest(token.encode(), self.dev_token):
                return self.store.credentials["user_id"]
            sql = (
                "SELECT user_id, expires_at FROM oauth_tokens "
                "WHERE token = ? AND kind = 'access' AND revoked = 0"
            )
            row = await self.store.run(lambda conn: conn.execute(sql, (token,)).fetchone())
            if row is not None and (row["expires_at"] is None or row["expires_at"] > time.time()):
                return str(row["user_id"])
        raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")

    async def identity(self, request: Request) -> Response:
        """The identity URL a token response names: who the session acts as."""
        user_id = await self.authenticate(request)
        found = await self.store.run(load, user_id)
        if found is None or request.path_params["user"] != user_id:
            raise not_found()
        user = found[1]
        return JSONResponse({
            "id": f"{public_base_url(request)}/id/{ORG_ID}/{user_id}", "user_id": user_id,
            "organization_id": ORG_ID, "username": user["Username"], "email": user["Email"],
            "display_name": user["Name"], "active": user["IsActive"], "user_type": "STANDARD",
        })  # fmt: skip

    async def dispatch(self, request: Request) -> Response:
        """Every ``/services/data`` request: versions, then auth, daily limit and the resource."""
        parts = _segments(request)
        if not parts:  # the versions list needs no session
            return JSONResponse([{"label": label, "url": f"/services/data/v{v}", "version": v}
                                 for label, v in _VERSIONS])  # fmt: skip
        headers: dict[str, str] = {}
        try:
            if parts[0] not in {f"v{v}" for _, v in _VERSIONS}:
                raise not_found()
            user_id = await self.authenticate(request)
            decision = self.control.check_keyed("daily_api_requests", "org")
            if decision.limit:
                used = decision.limit - decision.remaining
                headers["Sforce-Limit-Info"] = f"api-usage={used}/{decision.limit}"
            if not decision.allowed:
                raise _limit_exceeded()
            response = await self._route(request, parts[1:], user_id, decision)
        except SalesforceError as exc:
            response = JSONResponse(exc.body, exc.status)
        response.headers.update(headers)
        return response

    async def _route(
        self, request: Request, parts: list[str], user_id: str, decision: LimitDecision
    ) -> Response:
        method, base = request.method, f"/services/data/v{API_VERSION}"
        if not parts or parts[0] in ("limits", "query") or parts == ["sobjects"]:
            if method not in ("GET", "HEAD"):
                raise _not_allowed(method, "GET,HEAD")
            if not parts:
                return JSONResponse({n: f"{base}/{n}" for n in ("sobjects", "query", "limits")})
            if parts == ["limits"]:
                return JSONResponse(_limits(decision))
            if parts == ["sobjects"]:
                objects = [sobject_info(o) for o in OBJECTS.values()]
                return JSONResponse({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects})
            if parts[0] == "query" and len(parts) <= 2:
                return await self._query(request, parts[1:])
            raise not_found()
        obj = OBJECTS.get(parts[1].lower()) if parts[0] == "sobjects" and len(parts) <= 4 else None
        if obj is None:
            raise not_found()
        if len(parts) == 2 and method in ("GET", "POST"):
            if method == "POST":
                return await self._create(request, obj, user_id)
            return JSONResponse({"objectDescribe": sobject_info(obj), "recentItems": []})
        if parts[2:] == ["describe"] and method == "GET":
            return JSONResponse(describe_json(obj))
        if len(parts) == 3 and method in ("GET", "PATCH"):
            return await self._row(request, obj, _row_id(obj, parts[2]), user_id)
        if len(parts) == 4 and method in ("GET", "PATCH"):
            return await self._by_field(request, obj, parts[2], parts[3], user_id)
        raise _not_allowed(method, "GET,PATCH,HEAD" if len(parts) > 2 else "GET,POST,HEAD")

    async def _query(self, request: Request, locator: list[str]) -> Response:
        options = request.headers.get("sforce-query-options", "")
        match = re.search(r"batchSize=(\d+)", options)
        # Salesforce takes 200–2000 and treats batchSize as a hint; the default is 2000.
        batch = min(max(int(match.group(1)), 200), 2000) if match else 2000
        soql = request.query_params.get("q")
        if not locator and not soql:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        return JSONResponse(await self.store.run(self._page, soql, locator, batch))

    def _page(
        self, conn: sqlite3.Connection, soql: str | None, locator: list[str], batch: int
    ) -> Json:
        if not locator:
            q, ids = run_query(conn, soql or "")
            cursor, offset = None, 0
        else:
            cursor, _, start = locator[0].rpartition("-")
            row = conn.execute("SELECT * FROM query_cursors WHERE id = ?", (cursor,)).fetchone()
            if row is None or not start.isdigit():
                raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            fields = tuple(tuple(p) for p in json.loads(row["fields"]))
            q = Query(OBJECTS[row["type"].lower()], fields, (), (), None)
            ids, offset = json.loads(row["ids"]), int(start)
        end = offset + batch
        if cursor is None and end < len(ids):
            # The locator keeps the matching ids, so later pages see the same result set;
            # Salesforce lets a locator lapse after 15 minutes unused.
            conn.execute("DELETE FROM query_cursors WHERE created_at < ?", (time.time() - 900,))
            cursor = sf_id("01g", next_id(conn, "query_locator", 1))
            row = (cursor, q.obj.name, json.dumps(q.fields), json.dumps(ids), time.time())
            conn.execute("INSERT INTO query_cursors VALUES (?, ?, ?, ?, ?)", row)
        body: Json = {"totalSize": len(ids), "done": end >= len(ids)}
        if end < len(ids):
            body["nextRecordsUrl"] = f"/services/data/v{API_VERSION}/query/{cursor}-{end}"
        return {**body, "records": query_records(conn, q, ids[offset:end])}

    async def _create(self, request: Request, obj: SObjectDef, user_id: str) -> Response:
        if not obj.writable:
            raise _not_allowed("POST", "GET,HEAD")
        body = await _json_body(request, obj)

        def work(conn: sqlite3.Connection) -> str:
            values = validate_write(conn, obj, body, creating=True)
            return insert_record(conn, obj, values, user_id, time.time())

        record_id = await self.store.run(work)
        mark_write(request)
        return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)

    async def _row(
        self, request: Request, obj: SObjectDef, record_id: str, user_id: str
    ) -> Response:
        if request.method == "GET":
            found = await self.store.run(load, record_id)
            if found is None or found[0] is not obj:
                raise not_found()
            only = [f.strip() for f in request.query_params.get("fields", "").split(",")]
            unknown = [name for name in only if name and obj.field(name) is None]
            if unknown:
                message = no_such_column(unknown[0], obj.name)
                raise SalesforceError(400, "INVALID_FIELD", message)
            return JSONResponse(record_json(obj, found[1], [name for name in only if name]))
        if not obj.writable:
            raise _not_allowed("PATCH", "GET,HEAD")
        body = await _json_body(request, obj)

        def work(conn: sqlite3.Connection) -> None:
            found = load(conn, record_id)
            if found is None or found[0] is not obj:
                raise not_found()
            values = validate_write(conn, obj, body, creating=False)
            update_record(conn, obj, found[1], values, user_id, time.time())

        await self.store.run(work)
        mark_write(request)
        return Response(status_code=204)

    async def _by_field(
        self, request: Request, obj: SObjectDef, name: str, value: str, user_id: str
    ) -> Response:
        """sObject Rows by External ID: GET one record, or PATCH to upsert it."""
        field = obj.field(name)
        if field is None or not (field.external_id or field.id_lookup or field.type == "id"):
            message = f"Provided external ID field does not exist or is not accessible: {name}"
            raise SalesforceError(404, "NOT_FOUND", message)
        if request.method == "GET":
            ids = await self.store.run(find_by_field, obj, field.name, value)
            if len(ids) > 1:
                return _multiple(obj, ids)
            found = await self.store.run(load, ids[0]) if ids else None
            if found is None:
                raise not_found()
            return JSONResponse(record_json(obj, found[1]))
        if not obj.writable:
            raise _not_allowed("PATCH", "GET,HEAD")
        body = await _json_body(request, obj)
        if any(key.lower() == field.name.lower() for key in body):
            message = f"{field.name} is in both the URL and the request body"
            raise SalesforceError(400, "INVALID_FIELD", message, [field.name])

        def work(conn: sqlite3.Connection) -> tuple[int, Any]:
            ids, now = find_by_field(conn, obj, field.name, value), time.time()
            if len(ids) > 1:
                return 300, ids
            found = load(conn, ids[0]) if ids else None
            if found is not None:
                values = validate_write(conn, obj, body, creating=False)
                update_record(conn, obj, found[1], values, user_id, now)
                return 200, ids[0]
            # No match: the external id's value becomes a field of the new record.
            values = validate_write(conn, obj, {**body, field.name: value}, creating=True)
            return 201, insert_record(conn, obj, values, user_id, now)

        status, result = await self.store.run(work)
        if status == 300:
            return _multiple(obj, result)
        mark_write(request)
        answer = {"id": result, "success": True, "errors": [], "created": status == 201}
        return JSONResponse(answer, status_code=status)


# --------------------------------------------------------------------------- app factory


def _open_store(home: Path) -> SandboxStore:
    return SandboxStore(
        home / "sandboxes" / "salesforce.sqlite3",
        schema=SCHEMA,
        seed=seed,
        make_credentials=make_credentials,
    )


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SalesforceError):
        return JSONResponse(exc.body, exc.status)
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        return JSONResponse(not_found().body, 404)
    message = "An unexpected error occurred. Please include this ErrorId if you contact support."
    return _error(500, "UNKNOWN_EXCEPTION", message)


def create_app(home: Path) -> SandboxApp:
    """Build the Salesforce sandbox over ``home/sandboxes/salesforce.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app; its root stands for an org's instance URL
        (``https://<MyDomain>.my.salesforce.com``). Mount it anywhere.

    Example:
        >>> app = create_app(home)                                         # doctest: +SKIP
        >>> # GET {mount}/services/data/v59.0/sobjects/Case/CaseNumber/00001123
    """
    store = _open_store(home)
    control = _Control(SalesforceProfile())
    oauth, api = _OAuth(store, control), _RestApi(store, control)
    verbs = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]
    routes = [
        Route("/services/data{rest:path}", api.dispatch, methods=verbs),
        Route("/services/oauth2/token", oauth.token, methods=["POST"]),
        Route("/services/oauth2/revoke", oauth.revoke, methods=["GET", "POST"]),
        Route("/id/{org}/{user}", api.identity, methods=["GET"]),
    ]
    handlers = {SalesforceError: _error_response, HTTPException: _error_response}
    router = Starlette(routes=routes, exception_handlers={**handlers, Exception: _error_response})
    return SandboxApp(router, store, control)


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use.

    Returns:
        ``access_token`` (long-lived, for ``Authorization: Bearer``), the connected app's
        ``client_id``/``client_secret``/``certificate_pem`` and its ``private_key_pem`` (JWT
        bearer), the integration user's ``username``/``password``/``security_token``, a
        ``refresh_token`` (rotated on use), ``org_id``, ``user_id`` and ``api_version``.
    """
    store = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
