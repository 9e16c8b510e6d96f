"""HubSpot CRM API sandbox: tickets, notes, companies, contacts, owners, properties and OAuth,
as api.hubapi.com.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (HubSpot), developers.hubspot.com and the
request/response models of HubSpot's own client library (``hubspot-api-client``), which is
tested against this sandbox. Wording that could not be confirmed is listed as unverified in
docs/crms/hubspot.md. Schema, property definitions, validation and search live in
`_hubspot_records`; seed data in `_hubspot_seed`.

Limits: HubSpot counts bursts per rolling 10 seconds (``TEN_SECONDLY_ROLLING``), so the
harness's account window is 10 s here and ``rate_limit_per_minute`` sets the per-10-s limit;
private-app tokens also have a daily limit; search is limited per token per second.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uwf.sandboxes import _hubspot_records as rec
from uwf.sandboxes._common import Json
from uwf.sandboxes._harness import ControlError, SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._hubspot_records import HubSpotError, find, invalid, object_json, object_type
from uwf.sandboxes._hubspot_seed import seed, upgrade
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._store import SandboxStore

__all__ = ["HubSpotControl", "HubSpotProfile", "create_app", "credentials"]

_STATE = "uwf.hubspot"  # per-request scope entry: correlation id, daily-limit headers
_AUTH_FAILURE = {"x-hubspot-auth-failure": "401 Unauthorized"}
_GRANTS = ("authorization_code", "refresh_token", "client_credentials")
_BATCH_ACTIONS = ("read", "create", "update", "upsert")
_NO_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


class _Json(JSONResponse):
    media_type = "application/json;charset=utf-8"  # what api.hubapi.com sends


def _rate_limit_body(policy: str) -> Json:
    # This body has `errorType` and `policyName` but no `category` (CRM-FACTS).
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "requestId": uuid.uuid4().hex,
    }


def _rate_limited(policy: str, retry_after: int) -> HubSpotError:
    return HubSpotError(429, _rate_limit_body(policy), {"Retry-After": str(retry_after)})


# --------------------------------------------------------------------------- harness plug-ins


class HubSpotProfile:
    """HubSpot's limits, headers and failure bodies for the shared harness."""

    @property
    def crm(self) -> str:
        return "hubspot"

    @property
    def rate_limit_per_minute(self) -> int:
        return 190  # per 10 s: private apps on Professional/Enterprise (see HubSpotControl)

    @property
    def keyed_limits(self) -> Mapping[str, KeyedLimit]:
        # CRM search: "five requests per second" per token (CRM-FACTS; 4 in older docs).
        return {"search_limit": KeyedLimit(default=5, window_s=1.0)}

    @property
    def injectable_statuses(self) -> frozenset[int]:
        return frozenset({429, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        return [
            ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
            ("X-HubSpot-RateLimit-Max", str(decision.limit)),
            ("X-HubSpot-RateLimit-Remaining", str(decision.remaining)),
        ]

    def rate_limited(self, decision: LimitDecision) -> Response:
        body = _rate_limit_body("TEN_SECONDLY_ROLLING")
        return _Json(body, 429, {"Retry-After": str(decision.reset_s)})

    def injected_error(self, status: int) -> Response:
        # Retry-After: 1 keeps fault-injection runs fast while proving clients honour it.
        retry = {"Retry-After": "1"}
        if status == 429:
            return _Json(_rate_limit_body("TEN_SECONDLY_ROLLING"), 429, retry)
        if status in (502, 504):  # the CDN in front of HubSpot answers these in HTML
            reason = "Bad Gateway" if status == 502 else "Gateway Timeout"
            return HTMLResponse(f"<html><body><h1>{status} {reason}</h1></body></html>", status)
        message = "internal error" if status == 500 else "Service Unavailable"
        body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
        return _Json(body, status, retry if status == 503 else None)


_EXTRA_DEFAULTS: Json = {
    "token_ttl_seconds": 1800,  # HubSpot's OAuth access tokens live 30 minutes
    "daily_limit": 1_000_000,  # private apps, Enterprise; OAuth apps have no daily limit
    "note_timestamp_required": True,  # HubSpot refuses a note without hs_timestamp
    "search_lag_seconds": 0,  # CRM search trails writes by seconds in HubSpot; 0: at once
}


class HubSpotControl(SandboxControl):
    """The shared `_control`, plus HubSpot's token lifetime, daily limit and token stats.

    Extra keys: ``token_ttl_seconds`` (lifetime of newly issued OAuth access tokens; 0
    issues tokens that are already expired), ``daily_limit`` (private-app requests per UTC
    day; null disables) and ``note_timestamp_required`` (false fills a missing
    ``hs_timestamp`` with the current time instead of HubSpot's 400), ``search_lag_seconds``
    (records written that recently are not found by CRM search yet). Stats gain
    ``token_requests`` (a count) and ``token_requests_by_grant_type``.
    """

    def __init__(self, profile: HubSpotProfile) -> None:
        super().__init__(profile)
        self.account.window_s = 10.0  # TEN_SECONDLY_ROLLING, not per minute

    def reset(self) -> None:
        super().reset()
        self.token_ttl_seconds: int = _EXTRA_DEFAULTS["token_ttl_seconds"]
        self.daily_limit: int | None = _EXTRA_DEFAULTS["daily_limit"]
        self.note_timestamp_required: bool = _EXTRA_DEFAULTS["note_timestamp_required"]
        self.search_lag_seconds: int = _EXTRA_DEFAULTS["search_lag_seconds"]
        self.token_requests: Counter[str] = Counter()
        self._day, self._daily_used = "", 0

    def settings(self) -> Json:
        mine = {key: getattr(self, key) for key in _EXTRA_DEFAULTS}
        return {**super().settings(), **mine}

    def update(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ControlError("body", "the body must be a JSON object")
        known = sorted(self.settings())
        for key in body:
            if key not in known:
                raise ControlError(key, f"unknown key {key!r}; known keys: {known}")
        staged = {key: self._check_extra(key, body[key]) for key in _EXTRA_DEFAULTS if key in body}
        super().update({k: v for k, v in body.items() if k not in _EXTRA_DEFAULTS})
        for key, value in staged.items():
            setattr(self, key, value)

    @staticmethod
    def _check_extra(key: str, value: Any) -> Any:
        if key == "note_timestamp_required":
            if not isinstance(value, bool):
                raise ControlError(key, f"{key} must be true or false")
            return value
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if (value is None and key == "daily_limit") or (is_int and value >= (key == "daily_limit")):
            return value
        raise ControlError(key, f"{key} must be an integer >= {int(key == 'daily_limit')}")

    def snapshot(self) -> Json:
        snap = super().snapshot()
        by_grant = dict(sorted(self.token_requests.items()))
        # The same shape as every other sandbox's token counters.
        snap["stats"]["token_requests"] = sum(by_grant.values())
        snap["stats"]["token_requests_by_grant_type"] = by_grant
        return snap

    def acquire_daily(self) -> tuple[bool, int, int] | None:
        """Count one private-app request against today's limit: (allowed, limit, remaining)."""
        if self.daily_limit is None:
            return None
        today = datetime.now(UTC).date().isoformat()
        if today != self._day:
            self._day, self._daily_used = today, 0
        if self._daily_used >= self.daily_limit:
            return False, self.daily_limit, 0
        self._daily_used += 1
        return True, self.daily_limit, self.daily_limit - self._daily_used


# --------------------------------------------------------------------------- helpers


def _token_error(status: str, message: str) -> HubSpotError:
    # The token endpoint has its own body: `status` names the problem (BAD_REFRESH_TOKEN, …).
    return HubSpotError(400, {"status": status, "message": message})


def _ago(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}(s)"
    return f"{int(seconds)} second(s)"


async def _json_body(request: Request) -> Json:
    try:
        body = json.loads(await request.body())
    except json.JSONDecodeError as exc:
        text = f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise rec.hs_error(400, text) from None
    if not isinstance(body, dict):
        raise rec.invalid_json("expected a JSON object")
    return body


def _names(request: Request) -> list[str] | None:
    """``?properties=a,b`` or ``?properties=a&properties=b`` (the client library's form)."""
    values = request.query_params.getlist("properties")
    return [name for value in values for name in value.split(",") if name] or None


def _paging(request: Request, default: int, maximum: int) -> tuple[int, int]:
    """``limit`` (capped, unverified) and ``after`` (an id or offset) of a list request."""
    query = request.query_params
    limit, after = query.get("limit", str(default)), query.get("after", "0")
    if not limit.isdigit() or not after.isdigit() or len(after) > 18:
        raise invalid("limit and after must be non-negative integers")
    return max(1, min(int(limit), maximum)), int(after)


def _next_page(request: Request, after: str) -> Json:
    return {"next": {"after": after, "link": str(request.url.include_query_params(after=after))}}


def _number(text: str) -> int:
    """A path id as an integer; -1 (matches nothing) when it is not one."""
    return int(text) if text.isdigit() and len(text) < 19 else -1


# --------------------------------------------------------------------------- the API


class _HubSpotApi:
    """Route handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: HubSpotControl) -> None:
        self.store, self.control = store, control

    async def authenticate(self, request: Request) -> str:
        """The caller's token (a private-app or OAuth access token); HubSpot's 401 if none."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        private = self.store.credentials["private_app_token"].encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), private):
            daily = self.control.acquire_daily()
            if daily is not None:
                request.scope[_STATE]["daily"] = daily[1:]
                if not daily[0]:
                    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
                    midnight = datetime.combine(tomorrow, datetime.min.time(), UTC)
                    wait = math.ceil((midnight - datetime.now(UTC)).total_seconds())
                    raise _rate_limited("DAILY", wait)
            return token
        if scheme.lower() == "bearer" and token:
            sql = "SELECT expires_at FROM oauth_tokens WHERE token = ?"
            row = await self.store.run(lambda conn: conn.execute(sql, (token,)).fetchone())
            if row is not None and row["expires_at"] > time.time():
                return token
            if row is not None:
                age = _ago(time.time() - row["expires_at"])
                text = f"The OAuth token used to make this call expired {age} ago."
                raise rec.hs_error(401, text, "EXPIRED_AUTHENTICATION").with_headers(_AUTH_FAILURE)
        error = rec.hs_error(401, _NO_CREDENTIALS, "INVALID_AUTHENTICATION")
        raise error.with_headers(_AUTH_FAILURE)

    # ------------------------------------------------------------------ OAuth

    async def token(self, request: Request) -> Response:
        form = "application/x-www-form-urlencoded"
        is_form = request.headers.get("content-type", "").startswith(form)
        raw = (await request.body()).decode("utf-8", "replace") if is_form else ""
        fields = dict(parse_qsl(raw, keep_blank_values=True))
        grant = fields.get("grant_type", "")
        self.control.token_requests[grant or "(none)"] += 1
        creds = self.store.credentials

        def matches(name: str) -> bool:
            return hmac.compare_digest(fields.get(name, "").encode(), creds[name].encode())

        if grant not in _GRANTS:
            raise _token_error("BAD_GRANT_TYPE", "missing or unknown grant type")
        if not matches("client_id"):
            raise _token_error("BAD_CLIENT_ID", "missing or unknown client id")
        if not matches("client_secret"):
            raise _token_error("BAD_CLIENT_SECRET", "missing or invalid client secret")
        body = await self.store.run(self._issue, grant, fields, self.control.token_ttl_seconds)
        return _Json(body, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _issue(conn: sqlite3.Connection, grant: str, fields: dict[str, str], ttl: int) -> Json:
        refresh: str | None = None
        if grant == "refresh_token":
            # HubSpot does not rotate refresh tokens: the same one comes back and stays valid.
            refresh = fields.get("refresh_token", "")
            sql = "SELECT revoked FROM oauth_refresh_tokens WHERE token = ?"
            row = conn.execute(sql, (refresh,)).fetchone()
            if row is None or row["revoked"]:
                raise _token_error("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
        elif grant == "authorization_code":
            sql = "SELECT * FROM oauth_codes WHERE code = ?"
            row = conn.execute(sql, (fields.get("code", ""),)).fetchone()
            if row is None or row["used"] or row["expires_at"] < time.time():
                raise _token_error("BAD_AUTH_CODE", "missing or unknown auth code")
            if fields.get("redirect_uri") != row["redirect_uri"]:
                text = "redirect_uri does not match the authorization request"
                raise _token_error("BAD_REDIRECT_URI", text)
            conn.execute("UPDATE oauth_codes SET used = 1 WHERE code = ?", (row["code"],))
            refresh = f"na1-{secrets.token_hex(2)}-{uuid.uuid4()}"
            conn.execute("INSERT INTO oauth_refresh_tokens VALUES (?, 0)", (refresh,))
        access = "C" + secrets.token_urlsafe(96)  # opaque; HubSpot says allow up to 300 chars
        values = (access, grant, time.time() + ttl)
        conn.execute("INSERT INTO oauth_tokens VALUES (?, ?, ?)", values)
        body: Json = {"token_type": "bearer"}
        if refresh is not None:
            body["refresh_token"] = refresh
        return {**body, "access_token": access, "expires_in": ttl}

    async def authorize(self, request: Request) -> Response:
        """The install URL (app.hubspot.com/oauth/authorize): consents at once, redirects."""
        query = request.query_params
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != self.store.credentials["client_id"] or not redirect:
            raise _token_error("BAD_CLIENT_ID", "missing or unknown client id")
        code, sql = str(uuid.uuid4()), "INSERT INTO oauth_codes VALUES (?, ?, ?, 0)"
        await self.store.run(lambda conn: conn.execute(sql, (code, redirect, time.time() + 600)))
        params = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        separator = "&" if "?" in redirect else "?"
        return RedirectResponse(f"{redirect}{separator}{urlencode(params)}", 302)

    # ------------------------------------------------------------------ objects

    async def list_objects(self, request: Request) -> Response:
        await self.authenticate(request)
        otype = object_type(request.path_params["otype"])
        limit, after = _paging(request, 10, 100)
        archived = request.query_params.get("archived") == "true"  # nothing is ever archived
        sql = "SELECT * FROM objects WHERE type = ? AND id >= ? AND ? ORDER BY id LIMIT ?"
        args = (otype, after, not archived, limit + 1)
        rows = await self.store.run(lambda conn: [dict(r) for r in conn.execute(sql, args)])
        names = _names(request) or rec.DEFAULTS[otype]
        body: Json = {"results": [object_json(r, otype, names) for r in rows[:limit]]}
        if len(rows) > limit:
            body["paging"] = _next_page(request, str(rows[limit]["id"]))
        return _Json(body)

    async def get_object(self, request: Request) -> Response:
        await self.authenticate(request)
        otype = object_type(request.path_params["otype"])
        query = request.query_params
        wanted = [object_type(t) for v in query.getlist("associations") for t in v.split(",") if t]

        def work(conn: sqlite3.Connection) -> Json:
            row = find(conn, otype, request.path_params["oid"], query.get("idProperty"))
            if row is None:
                raise rec.not_found()
            links = {t: rec.associated(conn, otype, row["id"], t) for t in wanted}
            return object_json(row, otype, _names(request) or rec.DEFAULTS[otype], links)

        return _Json(await self.store.run(work))

    async def create_object(self, request: Request) -> Response:
        await self.authenticate(request)
        otype = object_type(request.path_params["otype"])
        body = await _json_body(request)
        row = await self.store.run(self._create, otype, body)
        mark_write(request)
        return _Json(object_json(row, otype), 201)

    def _create(
        self, conn: sqlite3.Connection, otype: str, item: Json, extra: Json | None = None
    ) -> dict[str, Any]:
        props = {**rec.validate_properties(conn, otype, item.get("properties")), **(extra or {})}
        links = rec.validate_associations(conn, otype, item.get("associations"))
        lenient = otype == "notes" and not self.control.note_timestamp_required
        if lenient and not props.get("hs_timestamp"):
            props["hs_timestamp"] = rec.iso_ms()  # the documented sandbox-only leniency
        object_id = rec.save_object(conn, otype, None, props)
        for to_type, to_id, type_id in links:
            rec.associate(conn, otype, object_id, to_type, to_id, type_id)
        return find(conn, otype, object_id) or {}

    @staticmethod
    def _update(
        conn: sqlite3.Connection, otype: str, row: dict[str, Any], raw: Any
    ) -> dict[str, Any]:
        changes = rec.validate_properties(conn, otype, raw, own_id=row["id"])
        rec.save_object(conn, otype, row, changes)
        return find(conn, otype, row["id"]) or row

    async def update_object(self, request: Request) -> Response:
        await self.authenticate(request)
        otype = object_type(request.path_params["otype"])
        body = await _json_body(request)
        if "properties" not in body:
            raise invalid("Some required fields were not set: [properties]")

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            key, id_property = request.path_params["oid"], request.query_params.get("idProperty")
            row = find(conn, otype, key, id_property)
            if row is None:
                raise rec.not_found()
            return self._update(conn, otype, row, body["properties"])

        row = await self.store.run(work)
        mark_write(request)
        return _Json(object_json(row, otype))

    async def batch(self, request: Request) -> Response:
        await self.authenticate(request)
        otype, action = object_type(request.path_params["otype"]), request.path_params["action"]
        if action not in _BATCH_ACTIONS:
            raise rec.not_found()
        body = await _json_body(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise invalid("Some required fields were not set: [inputs]")
        if len(inputs) > 100:  # HubSpot's documented batch size; its spec has no maxItems
            raise invalid(f"Batch input size {len(inputs)} exceeds the limit of 100")
        started = rec.iso_ms()
        results, missing = await self.store.run(self._batch, otype, action, body, inputs)
        errors = []
        if missing:
            text = (
                f"Could not get some {rec.upper_name(otype)} objects, they may be deleted or not "
                "exist. Check that ids are valid."
            )
            errors = [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": text,
                       "context": {"ids": missing}, "errors": [], "links": {}}]  # fmt: skip
        if action != "read" and results:
            mark_write(request)
        status = 207 if errors else 201 if action == "create" else 200
        return _Json(rec.batch_envelope(results, errors, started), status)

    def _batch(
        self, conn: sqlite3.Connection, otype: str, action: str, body: Json, inputs: list[Json]
    ) -> tuple[list[Json], list[str]]:
        """One batch in one transaction: any invalid input fails it whole, like HubSpot."""
        results: list[Json] = []
        missing: list[str] = []
        keys = [str(item.get("id")) for item in inputs]
        if action == "upsert" and len(set(keys)) < len(keys):
            duplicates = sorted({key for key in keys if keys.count(key) > 1})
            raise invalid(f"Duplicate IDs found in batch input: {duplicates}")
        for item, key in zip(inputs, keys, strict=True):
            if action == "create":
                results.append(object_json(self._create(conn, otype, item), otype))
                continue
            id_property = body.get("idProperty") if action == "read" else item.get("idProperty")
            if action == "upsert" and (not id_property or item.get("id") in (None, "")):
                raise invalid("Some required fields were not set: [idProperty, id]")
            row = find(conn, otype, key, id_property)
            if action == "read":
                names = body.get("properties") or rec.DEFAULTS[otype]
                results += [object_json(row, otype, names)] if row else []
            elif row is not None:
                row = self._update(conn, otype, row, item.get("properties"))
                new = {"new": False} if action == "upsert" else None
                results.append(object_json(row, otype, extra=new))
            elif action == "upsert":  # created with its id property set to the key
                row = self._create(conn, otype, item, {str(id_property): key})
                results.append(object_json(row, otype, extra={"new": True}))
            if row is None and action != "upsert":
                missing.append(key)
        return results, missing

    async def search(self, request: Request) -> Response:
        token = await self.authenticate(request)
        otype = object_type(request.path_params["otype"])
        decision = self.control.check_keyed("search_limit", token)
        if not decision.allowed:
            raise _rate_limited("SECONDLY", decision.reset_s)
        body = await _json_body(request)
        lag = self.control.search_lag_seconds
        rows, total, after = await self.store.run(rec.search, otype, body, lag)
        names = body.get("properties") or rec.DEFAULTS[otype]
        result: Json = {"total": total, "results": [object_json(r, otype, names) for r in rows]}
        if after is not None:
            result["paging"] = {"next": {"after": str(after)}}
        return _Json(result)

    async def associations_v4(self, request: Request) -> Response:
        await self.authenticate(request)
        otype, to_type = (object_type(request.path_params[k]) for k in ("otype", "to_type"))
        limit, after = _paging(request, 500, 500)
        object_id = _number(request.path_params["oid"])
        rows = await self.store.run(rec.associated, otype, object_id, to_type)
        # One result per associated record, listing every type that links the two.
        linked: dict[int, list[Json]] = {}
        for r in rows:
            label = rec.ASSOCIATION_TYPES[r["type_id"]].label
            kind = {"category": "HUBSPOT_DEFINED", "typeId": r["type_id"], "label": label}
            linked.setdefault(r["to_id"], []).append(kind)
        page = list(linked.items())[after : after + limit]
        body: Json = {"results": [
            {"toObjectId": to_id, "associationTypes": kinds} for to_id, kinds in page
        ]}  # fmt: skip
        if after + limit < len(linked):
            body["paging"] = _next_page(request, str(after + limit))
        return _Json(body)

    # ------------------------------------------------------------------ owners, properties

    async def list_owners(self, request: Request) -> Response:
        await self.authenticate(request)
        query = request.query_params
        limit, after = _paging(request, 100, 500)
        email = query.get("email")
        sql = (
            "SELECT * FROM owners WHERE archived = ? AND id >= ? AND (? IS NULL OR email = ?) "
            "ORDER BY id LIMIT ?"
        )
        args = (int(query.get("archived") == "true"), after, email, email, limit + 1)
        rows = await self.store.run(lambda conn: list(conn.execute(sql, args)))
        body: Json = {"results": [rec.owner_json(r) for r in rows[:limit]]}
        if len(rows) > limit:
            body["paging"] = _next_page(request, str(rows[limit]["id"]))
        return _Json(body)

    async def get_owner(self, request: Request) -> Response:
        await self.authenticate(request)
        query = request.query_params
        column = {"id": "id", "userId": "user_id"}.get(query.get("idProperty", "id"))
        if column is None:
            raise invalid("idProperty must be id or userId")
        sql = f"SELECT * FROM owners WHERE {column} = ? AND archived = ?"  # noqa: S608 - one of two literals
        args = (_number(request.path_params["owner_id"]), int(query.get("archived") == "true"))
        row = await self.store.run(lambda conn: conn.execute(sql, args).fetchone())
        if row is None:
            raise rec.not_found()
        return _Json(rec.owner_json(row))

    async def list_properties(self, request: Request) -> Response:
        await self.authenticate(request)
        props = rec.PROPERTIES[object_type(request.path_params["otype"])].values()
        return _Json({"results": [rec.property_json(p) for p in props]})


# --------------------------------------------------------------------------- app factory


class _Envelope:
    """Stamps every response with a correlation id and, for private-app calls, the daily
    rate-limit headers (HubSpot leaves those off OAuth calls, which have no daily limit)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: Json = {"correlation": str(uuid.uuid4()), "daily": None}
        scope[_STATE] = state

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(b"x-hubspot-correlation-id", state["correlation"].encode())]
                if state["daily"] is not None:
                    limit, remaining = state["daily"]
                    headers.append((b"x-hubspot-ratelimit-daily", str(limit).encode()))
                    headers.append(
                        (b"x-hubspot-ratelimit-daily-remaining", str(remaining).encode())
                    )
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _error_response(request: Request, exc: Exception) -> Response:
    correlation = (request.scope.get(_STATE) or {}).get("correlation") or str(uuid.uuid4())
    if isinstance(exc, HubSpotError):
        return _Json({**exc.body, "correlationId": correlation}, exc.status, exc.headers)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: "resource not found", 405: "HTTP 405 Method Not Allowed"}.get(status)
    body = {"status": "error", "message": message or "internal error", "correlationId": correlation}
    return _Json(body, status if message else 500)


def _open_store(home: Path) -> SandboxStore:
    store = SandboxStore(
        home / "sandboxes" / "hubspot.sqlite3",
        schema=rec.SCHEMA,
        seed=seed,
        make_credentials=rec.make_credentials,
    )
    store.transact(upgrade)  # a file from before companies and contacts gains them
    return store


def create_app(home: Path) -> SandboxApp:
    """Build the HubSpot sandbox over ``home/sandboxes/hubspot.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app; it stands in for ``https://api.hubapi.com`` wherever it is mounted.
    """
    store = _open_store(home)
    control = HubSpotControl(HubSpotProfile())
    api = _HubSpotApi(store, control)
    objects = "/crm/v3/objects/{otype}"
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/oauth/v1/token", api.token, "POST"),
        ("/oauth/authorize", api.authorize, "GET"),
        (objects, api.list_objects, "GET"),
        (objects, api.create_object, "POST"),
        (f"{objects}/search", api.search, "POST"),
        (f"{objects}/batch/{{action}}", api.batch, "POST"),
        (f"{objects}/{{oid}}", api.get_object, "GET"),
        (f"{objects}/{{oid}}", api.update_object, "PATCH"),
        ("/crm/v4/objects/{otype}/{oid}/associations/{to_type}", api.associations_v4, "GET"),
        ("/crm/v3/owners", api.list_owners, "GET"),
        ("/crm/v3/owners/", api.list_owners, "GET"),  # the client library's spelling
        ("/crm/v3/owners/{owner_id}", api.get_owner, "GET"),
        ("/crm/v3/properties/{otype}", api.list_properties, "GET"),
    ]
    routes = [Route(path, handler, methods=[method]) for path, handler, method in table]
    handlers = {HubSpotError: _error_response, Exception: _error_response}
    router = Starlette(
        routes=routes, exception_handlers={HTTPException: _error_response, **handlers}
    )
    return SandboxApp(_Envelope(router), store, control)


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use."""
    store = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
