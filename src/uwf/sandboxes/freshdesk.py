"""Freshdesk API v2 sandbox: the routes, limits and error bodies of a real helpdesk account.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (Freshdesk), developers.freshdesk.com/api and
the API's own source as published in a public mirror (error wording, empty 404 bodies, the
``Link`` header). Freshdesk API v2 has no OAuth: callers send Basic ``api_key:X`` (or an
agent's ``email:password``), so this sandbox has no token endpoint. Schema, seed data, JSON
shapes and validation live in `_freshdesk_records`; docs/crms/freshdesk.md lists what is
emulated and what is not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uwf.sandboxes._common import Json, public_base_url, utc_iso
from uwf.sandboxes._freshdesk_customers import (
    CUSTOMERS_SCHEMA,
    company_fields_json,
    company_json,
    company_row,
    contact_fields_json,
    contact_json,
    contact_row,
    save_company,
    save_contact,
    seed_customers,
    upgrade_contacts,
    word_prefixes_match,
)
from uwf.sandboxes._freshdesk_records import (
    ADMIN_EMAIL,
    AGENTS,
    CONTACTS,
    DOMAIN,
    QUICKSTART_TICKET,
    SCHEMA,
    FreshdeskError,
    agent_json,
    as_html,
    error,
    hash_secret,
    insert_note,
    insert_ticket,
    invalid_field,
    make_credentials,
    matches,
    note_json,
    parse_query,
    plain_text,
    request_error,
    seed,
    ticket_fields_json,
    ticket_json,
    ticket_row,
    validate_note,
    validate_ticket,
    validation_failed,
)
from uwf.sandboxes._harness import SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._store import SandboxStore

__all__ = [
    "ADMIN_EMAIL",
    "AGENTS",
    "DOMAIN",
    "QUICKSTART_TICKET",
    "FreshdeskProfile",
    "create_app",
    "credentials",
]

_RATE_LIMITED = {
    "code": "rate_limit_exceeded",
    "message": "You have exceeded the limit of requests per minute. Please try again later.",
}
_INTERNAL = {"code": "internal_error", "message": "We're sorry, but something went wrong."}


class FreshdeskProfile:
    """Freshdesk's limits, headers and failure bodies for the shared harness."""

    crm = "freshdesk"
    rate_limit_per_minute = 400  # the Pro plan; the trial is 50 (`rate_limit_per_minute`)
    # Pro plan sub-limits, per minute per account: ticket creates/updates and list calls.
    keyed_limits: Mapping[str, KeyedLimit] = {
        "ticket_write_limit": KeyedLimit(default=160, window_s=60.0),
        "list_limit": KeyedLimit(default=100, window_s=60.0),
    }
    injectable_statuses = frozenset({429, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        return [
            ("X-RateLimit-Total", str(decision.limit)),
            ("X-RateLimit-Remaining", str(decision.remaining)),
            ("X-RateLimit-Used-CurrentRequest", "1"),
        ]

    def rate_limited(self, decision: LimitDecision) -> Response:
        headers = {"Retry-After": str(decision.reset_s)}
        return JSONResponse(_RATE_LIMITED, status_code=429, headers=headers)

    def injected_error(self, status: int) -> Response:
        # Retry-After: 1 keeps fault-injection runs fast while proving clients honour it.
        if status == 429:
            return JSONResponse(_RATE_LIMITED, status_code=429, headers={"Retry-After": "1"})
        if status == 500:
            return JSONResponse(_INTERNAL, status_code=500)
        if status == 503:  # maintenance pages come from the edge, as HTML
            page = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            return Response(page, 503, {"Retry-After": "1"}, media_type="text/html")
        reason = {502: "Bad Gateway", 504: "Gateway Time-out"}.get(status, "Server Error")
        page = f"<html><body><h1>{status} {reason}</h1></body></html>"
        return Response(page, status, media_type="text/html")


# --------------------------------------------------------------------------- request helpers


def _page_params(request: Request, max_page: int | None = None) -> tuple[int, int]:
    """``page`` (from 1) and ``per_page`` (default 30, at most 100), validated."""
    errors: list[Json] = []

    def number(name: str, default: int, limit: int | None) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < 1 or (limit is not None and int(raw) > limit):
            bound = f" less than or equal to {limit}" if limit is not None else ""
            message = f"It should be a Positive Integer{bound}"
            errors.append(error(name, message, "datatype_mismatch"))
            return default
        return int(raw)

    page, per_page = number("page", 1, max_page), number("per_page", 30, 100)
    if errors:
        raise validation_failed(errors)
    return page, per_page


def _check_params(request: Request, allowed: set[str]) -> None:
    unknown = [k for k in request.query_params if k not in allowed]
    if unknown:
        raise validation_failed([invalid_field(k) for k in unknown])


def _link(request: Request, page: int, more: bool) -> dict[str, str]:
    """Freshdesk's pagination: a ``Link`` header to the next page, absent on the last."""
    if not more:
        return {}
    # request.url carries the mount prefix; every other query parameter is kept.
    return {"Link": f'<{request.url.include_query_params(page=page + 1)}>; rel="next"'}


def _iso_since(raw: str, field: str) -> str:
    """A client's ISO 8601 date or time as our UTC timestamp format."""
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        fmt = "It should be a valid date in the 'combined date and time ISO8601' format"
        raise validation_failed([error(field, fmt)]) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _json_body(request: Request) -> Json:
    content_type = request.headers.get("content-type")
    if content_type and "json" not in content_type.split(";")[0]:
        message = (
            f"Content-Type header is set to {content_type}. It should be set to application/json"
        )
        raise request_error(415, "invalid_content_type", message)
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise request_error(400, "invalid_json", "Request body has invalid json format")
    return body


def _fetch(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    args: tuple[Any, ...],
    order: str,
    page: int,
    per_page: int,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of rows plus whether another page follows (one row more is read to know)."""
    sql = f"SELECT * FROM {table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608 - table, where and order are literals of this module
    rows = [dict(r) for r in conn.execute(sql, (*args, per_page + 1, (page - 1) * per_page))]
    return rows[:per_page], len(rows) > per_page


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True, slots=True)
class _Caller:
    agent_id: int


class _FreshdeskApi:
    """Route handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: SandboxControl) -> None:
        self.store, self.control = store, control

    async def authenticate(self, request: Request) -> _Caller:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, _, password = decoded.partition(":")
        if scheme.lower() != "basic" or not username:
            raise request_error(401, "invalid_credentials", _NOT_LOGGED_IN)

        def lookup(conn: sqlite3.Connection) -> tuple[str, int] | None:
            if "@" not in username:  # an API key; the password is ignored ("X" by convention)
                row = conn.execute(
                    "SELECT id FROM agents WHERE api_key = ? AND active = 1", (username,)
                ).fetchone()
                return None if row is None else ("agent", int(row["id"]))
            for table in ("agents", "contacts"):
                sql = f"SELECT id, password_hash FROM {table} WHERE email = ? AND active = 1"  # noqa: S608 - literal table names
                row = conn.execute(sql, (username,)).fetchone()
                stored = "" if row is None else row["password_hash"] or ""
                if stored and hmac.compare_digest(stored, hash_secret(password)):
                    return table[:-1], int(row["id"])
            return None

        found = await self.store.run(lookup)
        if found is None:
            raise request_error(401, "invalid_credentials", _NOT_LOGGED_IN)
        if found[0] != "agent":  # a customer may log in to the portal, not use the agent API
            message = "You are not authorized to perform this action."
            raise request_error(403, "access_denied", message)
        return _Caller(found[1])

    def _budget(self, name: str) -> None:
        decision = self.control.check_keyed(name, "account")
        if not decision.allowed:
            raise FreshdeskError(429, _RATE_LIMITED, {"Retry-After": str(decision.reset_s)})

    # ----------------------------------------------------------------- tickets

    async def list_tickets(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        allowed = {"filter", "requester_id", "email", "company_id", "unique_external_id"}
        allowed |= {"updated_since", "order_by", "order_type", "include", "page", "per_page"}
        _check_params(request, allowed)
        page, per_page = _page_params(request)
        self._budget("list_limit")
        query = request.query_params
        where: list[str] = ["1"]
        args: list[Any] = []
        # Without updated_since, Freshdesk lists only tickets created in the last 30 days.
        if since := query.get("updated_since"):
            where.append("updated_at >= ?")
            args.append(_iso_since(since, "updated_since"))
        else:
            where.append("created_at >= ?")
            args.append((datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        named = query.get("filter")
        if named not in (None, "new_and_my_open", "watching", "spam", "deleted"):
            choices = "new_and_my_open,watching,spam,deleted"
            raise validation_failed([error("filter", _one_of(choices))])
        if named == "new_and_my_open":
            where.append("status = 2 AND (responder_id IS NULL OR responder_id = ?)")
            args.append(caller.agent_id)
        elif named is not None:
            where.append("0")  # no one watches, and nothing is spam or deleted here
        if (requester := query.get("requester_id")) is not None:
            where.append("requester_id = ?")
            args.append(int(requester) if requester.isdigit() else -1)
        if (email := query.get("email")) is not None:
            where.append("requester_id IN (SELECT id FROM contacts WHERE email = ?)")
            args.append(email)
        order_by, order_type = query.get("order_by", "created_at"), query.get("order_type", "desc")
        errors = []
        if order_by not in ("created_at", "due_by", "updated_at", "status"):
            errors.append(error("order_by", _one_of("created_at,due_by,updated_at,status")))
        if order_type not in ("asc", "desc"):
            errors.append(error("order_type", _one_of("asc,desc")))
        includes = set(filter(None, query.get("include", "").split(",")))
        if includes - {"requester", "stats", "description"}:
            errors.append(error("include", _one_of("requester,stats,description")))
        if errors:
            raise validation_failed(errors)
        order = f"{order_by} {order_type.upper()}, id {order_type.upper()}"
        rows, more = await self.store.run(
            _fetch, "tickets", " AND ".join(where), tuple(args), order, page, per_page
        )
        items = []
        for row in rows:
            item = ticket_json(row, description="description" in includes)
            items.append(await self._embed(item, row, includes))
        return JSONResponse(items, headers=_link(request, page, more))

    async def _embed(self, item: Json, row: Mapping[str, Any], includes: set[str]) -> Json:
        """Add what ``include=`` asked for (each embed costs Freshdesk credits; not counted)."""
        if "stats" in includes:
            item["stats"] = dict.fromkeys(_STATS)
        if "requester" in includes:
            sql, args = "SELECT * FROM contacts WHERE id = ?", (row["requester_id"],)
            found = await self.store.run(lambda c: c.execute(sql, args).fetchone())
            person = {k: found[k] for k in ("id", "name", "email")} if found else None
            item["requester"] = person and {**person, "mobile": None, "phone": None}
        if "conversations" in includes:  # the first ten, as Freshdesk embeds them
            where = ("conversations", "ticket_id = ?", (row["id"],))
            notes, _ = await self.store.run(_fetch, *where, "id", 1, 10)
            item["conversations"] = [note_json(n) for n in notes]
        if "company" in includes:
            item["company"] = {}
        return item

    async def show_ticket(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"include"})
        includes = set(filter(None, request.query_params.get("include", "").split(",")))
        allowed = {"conversations", "requester", "company", "stats"}
        if includes - allowed:
            message = _one_of("conversations,requester,company,stats")
            raise validation_failed([error("include", message)])
        row = await self.store.run(ticket_row, request.path_params["id"])
        return JSONResponse(await self._embed(ticket_json(row), row, includes))

    async def create_ticket(self, request: Request) -> Response:
        await self.authenticate(request)
        body = await _json_body(request)
        self._budget("ticket_write_limit")

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            fields = validate_ticket(conn, body, creating=True)
            description = _html(fields.pop("description"))
            return ticket_row(conn, insert_ticket(conn, fields, description, utc_iso()))

        row = await self.store.run(work)
        mark_write(request)
        location = f"{public_base_url(request)}/api/v2/tickets/{row['id']}"
        return JSONResponse(ticket_json(row), 201, {"Location": location})

    async def update_ticket(self, request: Request) -> Response:
        await self.authenticate(request)
        ticket_id = request.path_params["id"]
        body = await _json_body(request)
        self._budget("ticket_write_limit")

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            current = ticket_row(conn, ticket_id)  # 404 comes before validation, as in Freshdesk
            if not body:
                message = (
                    "Your update call does not have any parameter. "
                    "Atleast one parameter is required."
                )
                raise request_error(400, "missing_params", message)
            changes = validate_ticket(conn, body, creating=False)
            if "custom_fields" in changes:
                changes["custom_fields"] = {
                    **json.loads(current["custom_fields"]),
                    **changes["custom_fields"],
                }
            if "description" in changes:
                changes["description"] = _html(changes["description"])
                changes["description_text"] = plain_text(changes["description"])
            for field in ("tags", "custom_fields"):
                if field in changes:
                    changes[field] = json.dumps(changes[field])
            changes["updated_at"] = utc_iso()
            assignments = ", ".join(f"{f} = ?" for f in changes)
            sql = f"UPDATE tickets SET {assignments} WHERE id = ?"  # noqa: S608 - keys come from validate_ticket's fixed set
            conn.execute(sql, (*changes.values(), ticket_id))
            return ticket_row(conn, ticket_id)

        row = await self.store.run(work)
        mark_write(request)
        return JSONResponse(ticket_json(row))

    # ----------------------------------------------------------------- conversations

    async def list_conversations(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"page", "per_page"})
        page, per_page = _page_params(request)
        self._budget("list_limit")
        ticket_id = request.path_params["id"]

        def work(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool]:
            ticket_row(conn, ticket_id)  # 404 for an unknown ticket, not an empty list
            where = ("conversations", "ticket_id = ?", (ticket_id,))
            return _fetch(conn, *where, "id", page, per_page)

        rows, more = await self.store.run(work)
        return JSONResponse([note_json(r) for r in rows], headers=_link(request, page, more))

    async def create_note(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        ticket_id = request.path_params["id"]
        body = await _json_body(request)

        def work(conn: sqlite3.Connection) -> Json:
            ticket_row(conn, ticket_id)
            text, private, author = validate_note(conn, body, caller.agent_id)
            return insert_note(conn, ticket_id, author, text, private, utc_iso())

        note = await self.store.run(work)
        mark_write(request)
        return JSONResponse(note, 201)

    # ----------------------------------------------------------------- people and fields

    async def list_agents(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"email", "mobile", "phone", "state", "page", "per_page"})
        page, per_page = _page_params(request)
        self._budget("list_limit")
        where, args = "1", tuple[str, ...]()
        if (email := request.query_params.get("email")) is not None:
            where, args = "email = ?", (email,)
        if "mobile" in request.query_params or "phone" in request.query_params:
            where = "0"  # no seeded agent has a phone
        if request.query_params.get("state") not in (None, "fulltime"):
            where = "0"  # every seeded agent is full-time
        rows, more = await self.store.run(_fetch, "agents", where, args, "id", page, per_page)
        return JSONResponse([agent_json(r) for r in rows], headers=_link(request, page, more))

    async def show_agent(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        record_id = request.path_params.get("id", caller.agent_id)

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            sql = "SELECT * FROM agents WHERE id = ?"
            row = conn.execute(sql, (min(record_id, 2**63 - 1),)).fetchone()
            if row is None:
                raise FreshdeskError(404, None)
            return dict(row)

        return JSONResponse(agent_json(await self.store.run(work)))

    # ----------------------------------------------------------------- contacts and companies

    async def list_contacts(self, request: Request) -> Response:
        """Contacts by name; each filter is an exact match (email without case)."""
        await self.authenticate(request)
        filters = ("email", "mobile", "phone", "company_id", "unique_external_id")
        allowed = {*filters, "state", "updated_since", "page", "per_page"}
        _check_params(request, allowed)
        page, per_page = _page_params(request)
        self._budget("list_limit")
        query = request.query_params
        where, args = ["1"], list[Any]()
        for name in filters:
            if (value := query.get(name)) is not None:
                where.append(f"{name} = ?")
                args.append(int(value) if name == "company_id" and value.isdigit() else value)
        if since := query.get("updated_since"):
            where.append("updated_at >= ?")
            args.append(_iso_since(since, "updated_since"))
        state = query.get("state")
        if state not in (None, "verified", "unverified", "blocked", "deleted"):
            choices = "verified,unverified,deleted,blocked"
            raise validation_failed([error("state", _one_of(choices))])
        if state not in (None, "verified"):
            where.append("0")  # every contact here is verified; none is blocked or deleted
        rows, more = await self.store.run(
            _fetch, "contacts", " AND ".join(where), tuple(args), "name, id", page, per_page
        )
        return JSONResponse([contact_json(r) for r in rows], headers=_link(request, page, more))

    async def show_contact(self, request: Request) -> Response:
        await self.authenticate(request)
        row = await self.store.run(contact_row, request.path_params["id"])
        return JSONResponse(contact_json(row))

    async def save_contact(self, request: Request) -> Response:
        """``POST /contacts`` (201 with ``Location``) and ``PUT /contacts/{id}`` (200)."""
        return await self._save(request, "contacts", save_contact, contact_json)

    async def _save(
        self,
        request: Request,
        collection: str,
        save: Callable[..., dict[str, Any]],
        to_json: Callable[[Mapping[str, Any]], Any],
    ) -> Response:
        """Create (201 with ``Location``) or update (200) one record of ``collection``."""
        await self.authenticate(request)
        record_id = request.path_params.get("id")
        body = await _json_body(request)
        row = await self.store.run(save, body, record_id)
        mark_write(request)
        if record_id is not None:
            return JSONResponse(to_json(row))
        location = f"{public_base_url(request)}/api/v2/{collection}/{row['id']}"
        return JSONResponse(to_json(row), 201, {"Location": location})

    async def list_companies(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"page", "per_page"})
        page, per_page = _page_params(request)
        self._budget("list_limit")
        rows, more = await self.store.run(_fetch, "companies", "1", (), "id", page, per_page)
        return JSONResponse([company_json(r) for r in rows], headers=_link(request, page, more))

    async def show_company(self, request: Request) -> Response:
        await self.authenticate(request)
        row = await self.store.run(company_row, request.path_params["id"])
        return JSONResponse(company_json(row))

    async def save_company(self, request: Request) -> Response:
        """``POST /companies`` (201 with ``Location``) and ``PUT /companies/{id}`` (200)."""
        return await self._save(request, "companies", save_company, company_json)

    async def autocomplete_companies(self, request: Request) -> Response:
        """``{"companies": [{"id", "name"}]}``: names with a word starting with each word typed."""
        await self.authenticate(request)
        _check_params(request, {"name"})
        typed = request.query_params.get("name")
        if not typed:
            missing = error("name", "It should be a/an String", "missing_field")
            raise validation_failed([missing])

        def work(conn: sqlite3.Connection) -> list[Json]:
            rows = conn.execute("SELECT id, name FROM companies ORDER BY name, id")
            return [{"id": r["id"], "name": r["name"]} for r in rows]

        found = [c for c in await self.store.run(work) if word_prefixes_match(typed, c["name"])]
        return JSONResponse({"companies": found})

    async def company_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, set())
        return JSONResponse(company_fields_json())

    async def contact_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, set())
        return JSONResponse(contact_fields_json())

    async def ticket_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"type"})
        fields = ticket_fields_json()
        if kind := request.query_params.get("type"):
            fields = [f for f in fields if f["type"] == kind]
        return JSONResponse(fields)

    async def search_tickets(self, request: Request) -> Response:
        await self.authenticate(request)
        _check_params(request, {"query", "page"})
        page, _ = _page_params(request, max_page=10)
        raw = request.query_params.get("query")
        if raw is None:
            missing = error("query", "Mandatory attribute missing", "missing_field")
            raise validation_failed([missing])
        tree = parse_query(raw)
        self._budget("list_limit")

        def work(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM tickets ORDER BY created_at DESC, id DESC")
            return [dict(r) for r in rows if matches(tree, r)]

        found = await self.store.run(work)
        # Thirty per page, newest first; a query reaches at most ten pages.
        results = [ticket_json(r) for r in found[(page - 1) * 30 : page * 30]]
        return JSONResponse({"results": results, "total": len(found)})


_NOT_LOGGED_IN = "You have to be logged in to perform this action."
_STATS = ("agent_responded_at", "requester_responded_at", "first_responded_at",
          "status_updated_at", "reopened_at", "resolved_at", "closed_at",
          "pending_since")  # fmt: skip


def _one_of(choices: str) -> str:
    return f"It should be one of these values: '{choices}'"


def _html(text: Any) -> str:
    return as_html(str(text))


# --------------------------------------------------------------------------- app factory


class _ResponseHeaders:
    """Adds the headers every Freshdesk API response carries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-request-id", str(uuid.uuid4()).encode()),
                    (b"x-freshdesk-api-version", b"latest=api-v2; requested=api-v2"),
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, add)


def _seed(conn: sqlite3.Connection) -> None:
    upgrade_contacts(conn)
    seed(conn)
    seed_customers(conn, CONTACTS)


def _open_store(home: Path) -> SandboxStore:
    store = SandboxStore(
        home / "sandboxes" / "freshdesk.sqlite3",
        schema=SCHEMA + CUSTOMERS_SCHEMA,
        seed=_seed,
        make_credentials=make_credentials,
    )
    # A file made before companies existed: its contacts gain their new columns.
    store.transact(upgrade_contacts)
    return store


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, FreshdeskError):
        if exc.body is None:
            return Response(status_code=exc.status, headers=exc.headers)
        return JSONResponse(exc.body, exc.status, exc.headers)
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        # Starlette adds HEAD to every GET route; Freshdesk lists only the verbs it routes.
        verbs = (exc.headers or {}).get("Allow", "").split(", ")
        allow = ", ".join(v for v in ("GET", "POST", "PUT", "DELETE") if v in verbs)
        message = (
            f"{request.method} method is not allowed. It should be one of these method(s): {allow}"
        )
        return JSONResponse({"message": message}, 405, {"Allow": allow})
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return Response(status_code=404)  # unknown route: Freshdesk answers `head :not_found`
    return JSONResponse(_INTERNAL, 500)


def create_app(home: Path) -> SandboxApp:
    """Build the Freshdesk sandbox over ``home/sandboxes/freshdesk.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app. Mount it anywhere: ``Location`` and ``Link`` URLs carry the mount prefix.
    """
    store = _open_store(home)
    control = SandboxControl(FreshdeskProfile())
    api = _FreshdeskApi(store, control)
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/api/v2/tickets", api.list_tickets, "GET"),
        ("/api/v2/tickets", api.create_ticket, "POST"),
        ("/api/v2/tickets/{id:int}", api.show_ticket, "GET"),
        ("/api/v2/tickets/{id:int}", api.update_ticket, "PUT"),
        ("/api/v2/tickets/{id:int}/conversations", api.list_conversations, "GET"),
        ("/api/v2/tickets/{id:int}/notes", api.create_note, "POST"),
        ("/api/v2/search/tickets", api.search_tickets, "GET"),
        ("/api/v2/agents", api.list_agents, "GET"),
        ("/api/v2/agents/me", api.show_agent, "GET"),
        ("/api/v2/agents/{id:int}", api.show_agent, "GET"),
        ("/api/v2/contacts", api.list_contacts, "GET"),
        ("/api/v2/contacts", api.save_contact, "POST"),
        ("/api/v2/contacts/{id:int}", api.show_contact, "GET"),
        ("/api/v2/contacts/{id:int}", api.save_contact, "PUT"),
        ("/api/v2/companies", api.list_companies, "GET"),
        ("/api/v2/companies", api.save_company, "POST"),
        ("/api/v2/companies/autocomplete", api.autocomplete_companies, "GET"),
        ("/api/v2/companies/{id:int}", api.show_company, "GET"),
        ("/api/v2/companies/{id:int}", api.save_company, "PUT"),
        ("/api/v2/ticket_fields", api.ticket_fields, "GET"),
        ("/api/v2/company_fields", api.company_fields, "GET"),
        ("/api/v2/contact_fields", api.contact_fields, "GET"),
    ]
    grouped: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for path, handler, method in table:
        grouped.setdefault(path, {})[method] = handler
    routes = [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in grouped.items()
    ]
    handlers = {FreshdeskError: _error_response, HTTPException: _error_response}
    router = Starlette(routes=routes, exception_handlers={**handlers, Exception: _error_response})
    return SandboxApp(_ResponseHeaders(router), store, control)


def _dispatch(
    methods: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    # One Route per path with all its verbs, so a wrong verb is a 405 with `Allow`, not a 404.
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use."""
    store = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
