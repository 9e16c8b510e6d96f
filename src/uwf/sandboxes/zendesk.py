"""Zendesk Support API v2 sandbox: the routes, limits and error bodies of a real account.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (Zendesk) and developer.zendesk.com. Where
Zendesk's exact wording is unknown (malformed JSON, missing ``ticket``, the per-ticket update
limit) the body keeps Zendesk's classic ``{"error", "description"}`` form; docs/sandboxes.md
marks those as unverified. Schema, seed data, JSON shapes and validation live in
`_zendesk_records`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from uwf.sandboxes._common import Json, decode_cursor, encode_cursor, public_base_url, utc_iso
from uwf.sandboxes._harness import SandboxApp, SandboxControl, mark_write
from uwf.sandboxes._limits import KeyedLimit, LimitDecision
from uwf.sandboxes._store import (
    IdempotencyLedger,
    SandboxStore,
    StoredResponse,
    fingerprint,
    next_id,
)
from uwf.sandboxes._zendesk_directory import (
    DIRECTORY_SCHEMA,
    Write,
    organization_fields_json,
    organization_json,
    organization_row,
    seed_directory,
    upgrade,
    user_fields_json,
    write_organization,
    write_user,
)
from uwf.sandboxes._zendesk_records import (
    ADMIN_EMAIL,
    AGENTS,
    SCHEMA,
    SUBDOMAIN,
    VIA,
    Errors,
    NewComment,
    ZendeskError,
    audit_json,
    comment_json,
    find_or_create_requester,
    insert_comment,
    insert_ticket,
    invalid,
    make_credentials,
    plain_text,
    record_invalid,
    seed,
    ticket_fields_json,
    ticket_json,
    ticket_param,
    ticket_row,
    user_json,
    user_row,
    validate_changes,
    validate_comment,
)

__all__ = ["ADMIN_EMAIL", "AGENTS", "SUBDOMAIN", "ZendeskProfile", "create_app", "credentials"]

# --------------------------------------------------------------------------- error responses


def _bad_page(detail: str) -> ZendeskError:
    # Cursor pagination belongs to Zendesk's newer endpoints, which use the `errors` list.
    error = {"code": "InvalidPaginationParameter", "title": "Invalid Pagination Parameter"}
    return ZendeskError(400, {"errors": [{**error, "detail": detail}]})


class ZendeskProfile:
    """Zendesk's limits, headers and failure bodies for the shared harness."""

    @property
    def crm(self) -> str:
        return "zendesk"

    @property
    def rate_limit_per_minute(self) -> int:
        return 700  # the Enterprise plan

    @property
    def keyed_limits(self) -> Mapping[str, KeyedLimit]:
        # "30 updates per 10 minutes per user per ticket" on Update Ticket.
        return {"ticket_update_limit": KeyedLimit(default=30, window_s=600.0)}

    @property
    def injectable_statuses(self) -> frozenset[int]:
        return frozenset({429, 500, 502, 503, 504})

    def rate_limit_headers(self, decision: LimitDecision) -> list[tuple[str, str]]:
        limit, remaining = str(decision.limit), str(decision.remaining)
        return [
            ("X-Rate-Limit", limit),
            ("X-Rate-Limit-Remaining", remaining),
            ("ratelimit-limit", limit),
            ("ratelimit-remaining", remaining),
            ("ratelimit-reset", str(decision.reset_s)),
        ]

    def rate_limited(self, decision: LimitDecision) -> Response:
        headers = {"Retry-After": str(decision.reset_s)}
        return PlainTextResponse("Too Many Requests", status_code=429, headers=headers)

    def injected_error(self, status: int) -> Response:
        # Retry-After: 1 keeps fault-injection runs fast while still proving that clients
        # honour the header.
        retry = {"Retry-After": "1"}
        if status == 429:
            return PlainTextResponse("Too Many Requests", status_code=429, headers=retry)
        if status == 503:
            text = (
                "Service Unavailable: Zendesk is down for scheduled maintenance. "
                "Please retry after the number of seconds in the Retry-After header."
            )
            return PlainTextResponse(text, status_code=503, headers=retry)
        if status == 500:
            return JSONResponse(_INTERNAL_ERROR, status_code=500)
        reason = {502: "Bad Gateway", 504: "Gateway Timeout"}.get(status, "Server Error")
        return PlainTextResponse(f"{status} {reason}", status_code=status)


_INTERNAL_ERROR = {"error": "InternalServerError", "description": "Something went wrong"}

# --------------------------------------------------------------------------- pagination


@dataclass(frozen=True, slots=True)
class _Paging:
    cursor: bool
    size: int
    page: int = 1
    after: int | None = None
    before: int | None = None
    newest_first: bool = False


_MAX_ID = 2**63 - 1


def _sorted_paging(request: Request) -> _Paging:
    """Paging of a ticket's comments or audits, newest first with ``sort_order=desc`` (offset
    paging) or ``sort=-created_at`` (cursor paging); oldest first otherwise (other values
    are ignored)."""
    paging = _parse_paging(request)
    name, newest = ("sort", "-created_at") if paging.cursor else ("sort_order", "desc")
    value = request.query_params.get(name)
    return replace(paging, newest_first=value == newest)


def _parse_paging(request: Request) -> _Paging:
    query = request.query_params
    if not any(k in query for k in ("page[size]", "page[after]", "page[before]")):

        def number(name: str, default: int) -> int:
            raw = query.get(name, "")
            return int(raw) if raw.isdigit() and int(raw) > 0 else default

        # Offset pagination: Zendesk silently caps per_page at 100 instead of failing.
        return _Paging(False, min(number("per_page", 100), 100), page=number("page", 1))
    size = query.get("page[size]", "100")
    if not size.isdigit() or not 1 <= int(size) <= 100:
        raise _bad_page("page[size] must be an integer between 1 and 100")
    marks: dict[str, int] = {}
    for name in ("after", "before"):
        if raw := query.get(f"page[{name}]"):
            data = decode_cursor(raw)
            if data is None or not isinstance(data.get("id"), int):
                raise _bad_page(f"page[{name}] is not a valid cursor")
            marks[name] = data["id"]
    return _Paging(True, int(size), after=marks.get("after"), before=marks.get("before"))


def _fetch(
    conn: sqlite3.Connection, table: str, where: str, args: tuple[Any, ...], paging: _Paging
) -> tuple[list[dict[str, Any]], int]:
    """A page of ``table`` by id (descending if ``paging.newest_first``), plus the total
    (offset) or 1/0 for has_more."""
    if not paging.cursor:
        total = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0]  # noqa: S608 - table and where are literals of this module
        order = "DESC" if paging.newest_first else "ASC"
        sql = f"SELECT * FROM {table} WHERE {where} ORDER BY id {order} LIMIT ? OFFSET ?"  # noqa: S608
        rows = conn.execute(sql, (*args, paging.size, (paging.page - 1) * paging.size))
        return [dict(r) for r in rows], int(total)
    # Walking backwards (page[before]) reverses the direction; the page is then flipped back.
    back = paging.before is not None
    forward = back == paging.newest_first
    op, order = (">", "ASC") if forward else ("<", "DESC")
    sql = f"SELECT * FROM {table} WHERE {where} AND id {op} ? ORDER BY id {order} LIMIT ?"  # noqa: S608
    start = 0 if forward else _MAX_ID
    bound = paging.before if back else paging.after if paging.after is not None else start
    found = [dict(r) for r in conn.execute(sql, (*args, bound, paging.size + 1))]
    page = found[: paging.size]
    return (page[::-1] if back else page), int(len(found) > paging.size)


def _page_body(request: Request, key: str, items: list[Json], paging: _Paging, extra: int) -> Json:
    if not paging.cursor:

        def page_url(n: int) -> str:
            return str(request.url.include_query_params(page=n, per_page=paging.size))

        more = paging.page * paging.size < extra
        return {
            key: items,
            "next_page": page_url(paging.page + 1) if more else None,
            "previous_page": page_url(paging.page - 1) if paging.page > 1 else None,
            "count": extra,
        }
    first = encode_cursor({"id": items[0]["id"]}) if items else None
    last = encode_cursor({"id": items[-1]["id"]}) if items else None
    base = request.url.remove_query_params(["page[after]", "page[before]"])
    base = base.include_query_params(**{"page[size]": paging.size})
    # has_more looks forward after page[after] and backward after page[before].
    back = paging.before is not None
    has_next = bool(last) and (back or bool(extra))
    has_prev = bool(first) and (bool(extra) if back else paging.after is not None)
    links = {
        "next": str(base.include_query_params(**{"page[after]": last})) if has_next else None,
        "prev": str(base.include_query_params(**{"page[before]": first})) if has_prev else None,
    }
    meta = {"has_more": bool(extra), "after_cursor": last, "before_cursor": first}
    return {key: items, "meta": meta, "links": links}


async def _json_body(request: Request) -> Json:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        description = "Server could not parse JSON"
        raise ZendeskError(400, {"error": "InvalidJSON", "description": description})
    return body


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True, slots=True)
class _Caller:
    user_id: int
    system: Json  # becomes "metadata.system" on audits and comments: client, ip_address


class _ZendeskApi:
    """Route handlers; each does its SQL in one `SandboxStore.run` unit of work."""

    def __init__(self, store: SandboxStore, control: SandboxControl) -> None:
        self.store, self.control = store, control
        self.ledger = IdempotencyLedger(ttl_s=2 * 3600)

    async def authenticate(self, request: Request) -> _Caller:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        email, sep, token = decoded.partition("/token:")
        # API tokens are account-wide in Zendesk: any active agent's email works with one.
        token_ok = hmac.compare_digest(token.encode(), self.store.credentials["api_token"].encode())
        if scheme.lower() == "basic" and sep and token_ok:
            sql = "SELECT id FROM users WHERE email = ? AND active = 1 AND role != 'end-user'"
            row = await self.store.run(lambda conn: conn.execute(sql, (email,)).fetchone())
            if row is not None:
                client = request.client.host if request.client else None
                system = {"client": request.headers.get("user-agent"), "ip_address": client}
                return _Caller(int(row["id"]), system)
        headers = {"WWW-Authenticate": 'Basic realm="Web Password"'}
        raise ZendeskError(401, {"error": "Couldn't authenticate you"}, headers)

    async def list_tickets(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _parse_paging(request)
        external_id = request.query_params.get("external_id")
        where, args = ("external_id = ?", (external_id,)) if external_id else ("1", ())
        rows, extra = await self.store.run(_fetch, "tickets", where, args, paging)
        items = [ticket_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "tickets", items, paging, extra))

    async def show_ticket(self, request: Request) -> Response:
        await self.authenticate(request)
        row = await self.store.run(ticket_row, request.path_params["id"])
        return JSONResponse({"ticket": ticket_json(row, public_base_url(request))})

    async def list_comments(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _sorted_paging(request)

        def work(conn: sqlite3.Connection, ticket_id: int) -> tuple[list[dict[str, Any]], int]:
            ticket_row(conn, ticket_id)  # 404 for an unknown ticket, not an empty list
            return _fetch(conn, "comments", "ticket_id = ?", (ticket_id,), paging)

        rows, extra = await self.store.run(work, request.path_params["id"])
        items = [comment_json(r) for r in rows]
        return JSONResponse(_page_body(request, "comments", items, paging, extra))

    async def list_audits(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _sorted_paging(request)

        def work(conn: sqlite3.Connection, ticket_id: int) -> tuple[list[dict[str, Any]], int]:
            ticket_row(conn, ticket_id)
            return _fetch(conn, "audits", "ticket_id = ?", (ticket_id,), paging)

        rows, extra = await self.store.run(work, request.path_params["id"])
        items = [audit_json(r) for r in rows]
        return JSONResponse(_page_body(request, "audits", items, paging, extra))

    async def create_ticket(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        body = await _json_body(request)
        key = request.headers.get("idempotency-key")
        base = public_base_url(request)
        outcome, stored = await self.store.run(self._create, caller, body, key, base)
        headers = {**stored.headers, "x-idempotency-lookup": outcome} if key else stored.headers
        if outcome != "hit":
            mark_write(request)
        return Response(stored.body, stored.status, headers, media_type="application/json")

    def _create(
        self, conn: sqlite3.Connection, caller: _Caller, body: Json, key: str | None, base: str
    ) -> tuple[str, StoredResponse]:
        scope, body_print = "POST /api/v2/tickets", fingerprint(body)
        if key:
            found = self.ledger.lookup(conn, scope, key, body_print)
            if found.outcome == "mismatch":
                description = "Request parameters do not match the original request for this key"
                raise ZendeskError(
                    400, {"error": "IdempotentRequestError", "description": description}
                )
            if found.response is not None:
                return "hit", found.response
        data = ticket_param(body)
        if "comment" not in data and isinstance(data.get("description"), str):
            # Zendesk takes `description` on create as the first comment (clients such as
            # zenpy send it that way); `comment` wins when both are given.
            data = {**data, "comment": {"body": data["description"]}}
        errors: Errors = {}
        fields = validate_changes(
            conn, {k: v for k, v in data.items() if k != "description"}, errors
        )
        comment = validate_comment(conn, data.get("comment"), errors)
        if "comment" not in data:
            invalid(errors, "description", "BlankValue", "cannot be blank")
        if isinstance(data.get("requester"), dict) and "requester_id" not in data:
            fields["requester_id"] = find_or_create_requester(conn, data["requester"], errors)
        if errors or comment is None:
            raise record_invalid(errors)
        now = utc_iso()
        description = plain_text(comment.text, comment.is_html)
        ticket_id = insert_ticket(conn, fields, caller.user_id, description, now)
        row = ticket_row(conn, ticket_id)
        events = [
            {
                "id": next_id(conn, "event", 800001),
                "type": "Create",
                "field_name": f,
                "value": row[f],
            }
            for f in ("subject", "status", "priority", "type", "assignee_id", "group_id")
            if row[f] is not None
        ]
        audit = self._audit(conn, caller, ticket_id, events, comment, data.get("metadata"), now)
        ticket = ticket_json(row, base)
        payload = json.dumps({"ticket": ticket, "audit": audit})
        response = StoredResponse(201, payload, {"Location": ticket["url"]})
        if key:
            self.ledger.remember(conn, scope, key, body_print, response)
        return "miss", response

    async def update_ticket(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        ticket_id = request.path_params["id"]
        body = await _json_body(request)
        decision = self.control.check_keyed("ticket_update_limit", (caller.user_id, ticket_id))
        if not decision.allowed:
            text = (
                f"Number of allowed updates per ticket ({decision.limit} per 10 minutes) exceeded"
            )
            error = {"error": "APIRateLimitExceeded", "description": text}
            raise ZendeskError(429, error, {"Retry-After": str(decision.reset_s)})
        base = public_base_url(request)
        result = await self.store.run(self._update, caller, ticket_id, body, base)
        mark_write(request)
        return JSONResponse(result)

    def _update(
        self, conn: sqlite3.Connection, caller: _Caller, ticket_id: int, body: Json, base: str
    ) -> Json:
        current = ticket_row(conn, ticket_id)
        data = ticket_param(body)
        if current["status"] == "closed":
            error = {
                "description": "Status: closed prevents ticket update",
                "error": "ClosedPreventsUpdate",
            }
            raise record_invalid({"status": [error]})
        errors: Errors = {}
        changes = validate_changes(conn, data, errors)
        comment = validate_comment(conn, data.get("comment"), errors)
        if errors:
            raise record_invalid(errors)
        if current["status"] == "new" and changes.get("assignee_id") and "status" not in changes:
            changes["status"] = "open"  # Zendesk opens a new ticket once someone owns it
        if "custom_fields" in changes:
            changes["custom_fields"] = {
                **json.loads(current["custom_fields"]),
                **changes["custom_fields"],
            }
        now, events = utc_iso(), []
        for field, value in changes.items():
            is_json = field in ("tags", "custom_fields")
            stored = json.dumps(value) if is_json else value
            if stored != current[field]:
                previous = json.loads(current[field]) if is_json else current[field]
                event_id = next_id(conn, "event", 800001)
                events.append({"id": event_id, "type": "Change", "field_name": field,
                               "value": value, "previous_value": previous})  # fmt: skip
                sql = f"UPDATE tickets SET {field} = ?, updated_at = ? WHERE id = ?"  # noqa: S608 - field is one of validate_changes' fixed keys
                conn.execute(sql, (stored, now, ticket_id))
        if comment is not None:
            conn.execute("UPDATE tickets SET updated_at = ? WHERE id = ?", (now, ticket_id))
        audit = self._audit(conn, caller, ticket_id, events, comment, data.get("metadata"), now)
        return {"ticket": ticket_json(ticket_row(conn, ticket_id), base), "audit": audit}

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, caller: _Caller, ticket_id: int, events: list[Json],
        comment: NewComment | None, custom: Any, at: str,
    ) -> Json:  # fmt: skip
        """Store the audit of one write; the comment, if any, is its last event."""
        audit_id = next_id(conn, "audit", 700001)
        # `ticket.metadata` is how a client tags its own writes (UWF puts a correlation
        # marker there); Zendesk keeps it under metadata.custom of the audit and comment.
        metadata = {"system": caller.system, "custom": custom if isinstance(custom, dict) else {}}
        if comment is not None:
            author = comment.author_id or caller.user_id
            events.append(insert_comment(conn, ticket_id, author, comment.text, comment.is_html,
                                         comment.public, metadata, at, audit_id))  # fmt: skip
        row = (audit_id, ticket_id, caller.user_id, json.dumps(events), json.dumps(metadata), at)
        conn.execute("INSERT INTO audits VALUES (?, ?, ?, ?, ?, ?)", row)
        audit = {"id": audit_id, "ticket_id": ticket_id, "created_at": at, "via": VIA}
        return {**audit, "author_id": caller.user_id, "metadata": metadata, "events": events}

    async def list_users(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _parse_paging(request)
        rows, extra = await self.store.run(_fetch, "users", "1", (), paging)
        items = [user_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "users", items, paging, extra))

    async def show_user(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        row = await self.store.run(user_row, request.path_params.get("id", caller.user_id))
        return JSONResponse({"user": user_json(row, public_base_url(request))})

    async def search_users(self, request: Request) -> Response:
        await self.authenticate(request)
        query = request.query_params.get("query", "").strip()
        external_id = request.query_params.get("external_id")
        if external_id is None and query.startswith(("external_id:", "external_id=")):
            external_id = query[len("external_id:") :]
        args: tuple[str, ...]
        if external_id is not None:
            where, args = "external_id = ?", (external_id,)
        elif query.startswith("email:") or "@" in query:
            where, args = "email = ?", (query.removeprefix("email:"),)
        else:
            where, args = "(name LIKE ? OR email LIKE ?)", (f"%{query}%", f"%{query}%")
        rows, total = await self.store.run(_fetch, "users", where, args, _Paging(False, 100))
        items = [user_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(
            {"users": items, "next_page": None, "previous_page": None, "count": total}
        )

    async def list_organizations(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _parse_paging(request)
        rows, extra = await self.store.run(_fetch, "organizations", "1", (), paging)
        items = [organization_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "organizations", items, paging, extra))

    async def show_organization(self, request: Request) -> Response:
        await self.authenticate(request)
        row = await self.store.run(organization_row, request.path_params["id"])
        return JSONResponse({"organization": organization_json(row, public_base_url(request))})

    async def search_organizations(self, request: Request) -> Response:
        """Exact, case-insensitive match on ``external_id`` or ``name`` (not both)."""
        await self.authenticate(request)
        query = request.query_params
        given = [k for k in ("external_id", "name") if k in query]
        if len(given) != 1:
            description = "Provide exactly one of external_id or name"
            raise ZendeskError(400, {"error": "InvalidParameter", "description": description})
        where = f"{given[0]} = ? COLLATE NOCASE"
        paging = _parse_paging(request)
        rows, extra = await self.store.run(
            _fetch, "organizations", where, (query[given[0]],), paging
        )
        items = [organization_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "organizations", items, paging, extra))

    async def create_organization(self, request: Request) -> Response:
        return await self._write(request, "organization", write_organization, "create")

    async def update_organization(self, request: Request) -> Response:
        return await self._write(request, "organization", write_organization, "update")

    async def upsert_organization(self, request: Request) -> Response:
        return await self._write(request, "organization", write_organization, "create_or_update")

    async def create_user(self, request: Request) -> Response:
        return await self._write(request, "user", write_user, "create")

    async def update_user(self, request: Request) -> Response:
        return await self._write(request, "user", write_user, "update")

    async def upsert_user(self, request: Request) -> Response:
        return await self._write(request, "user", write_user, "create_or_update")

    async def _write(
        self,
        request: Request,
        kind: str,
        write: Callable[[sqlite3.Connection, Json, str, int | None], Write],
        mode: str,
    ) -> Response:
        """One organization or user write: 201 with ``Location`` when it made a record,
        else 200 (an update, or a create_or_update that matched)."""
        await self.authenticate(request)
        body = await _json_body(request)
        done = await self.store.run(write, body, mode, request.path_params.get("id"))
        mark_write(request)
        base = public_base_url(request)
        shape = organization_json if kind == "organization" else user_json
        record = shape(done.row, base)
        if done.created:
            return JSONResponse({kind: record}, 201, {"Location": record["url"]})
        return JSONResponse({kind: record})

    async def organization_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        fields = organization_fields_json(public_base_url(request))
        body = {"organization_fields": fields, "next_page": None, "previous_page": None}
        return JSONResponse({**body, "count": len(fields)})

    async def user_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        fields = user_fields_json(public_base_url(request))
        body = {"user_fields": fields, "next_page": None, "previous_page": None}
        return JSONResponse({**body, "count": len(fields)})

    async def ticket_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        fields = ticket_fields_json(public_base_url(request))
        body = {"ticket_fields": fields, "next_page": None, "previous_page": None}
        return JSONResponse({**body, "count": len(fields)})


# --------------------------------------------------------------------------- app factory


def _seed(conn: sqlite3.Connection) -> None:
    seed(conn)
    seed_directory(conn)


def _open_store(home: Path) -> SandboxStore:
    store = SandboxStore(
        home / "sandboxes" / "zendesk.sqlite3",
        schema=SCHEMA + DIRECTORY_SCHEMA,
        seed=_seed,
        make_credentials=make_credentials,
    )
    store.transact(upgrade)  # a file from before organizations gains them
    return store


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ZendeskError):
        return JSONResponse(exc.body, exc.status, exc.headers)
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        # Unknown path or unsupported verb: Zendesk answers both with InvalidEndpoint.
        return JSONResponse({"error": "InvalidEndpoint", "description": "Not found"}, 404)
    return JSONResponse(_INTERNAL_ERROR, 500)


def create_app(home: Path) -> SandboxApp:
    """Build the Zendesk sandbox over ``home/sandboxes/zendesk.sqlite3`` (seeded once).

    Args:
        home: UWF's home directory.

    Returns:
        The ASGI app. Mount it anywhere: the URLs it returns carry the mount prefix.
    """
    store = _open_store(home)
    control = SandboxControl(ZendeskProfile())
    api = _ZendeskApi(store, control)
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/api/v2/tickets", api.list_tickets, "GET"),
        ("/api/v2/tickets", api.create_ticket, "POST"),
        ("/api/v2/tickets/{id:int}", api.show_ticket, "GET"),
        ("/api/v2/tickets/{id:int}", api.update_ticket, "PUT"),
        ("/api/v2/tickets/{id:int}/comments", api.list_comments, "GET"),
        ("/api/v2/tickets/{id:int}/audits", api.list_audits, "GET"),
        ("/api/v2/users", api.list_users, "GET"),
        ("/api/v2/users", api.create_user, "POST"),
        ("/api/v2/users/me", api.show_user, "GET"),
        ("/api/v2/users/search", api.search_users, "GET"),
        ("/api/v2/users/create_or_update", api.upsert_user, "POST"),
        ("/api/v2/users/{id:int}", api.show_user, "GET"),
        ("/api/v2/users/{id:int}", api.update_user, "PUT"),
        ("/api/v2/ticket_fields", api.ticket_fields, "GET"),
        ("/api/v2/organizations", api.list_organizations, "GET"),
        ("/api/v2/organizations", api.create_organization, "POST"),
        ("/api/v2/organizations/search", api.search_organizations, "GET"),
        ("/api/v2/organizations/create_or_update", api.upsert_organization, "POST"),
        ("/api/v2/organizations/{id:int}", api.show_organization, "GET"),
        ("/api/v2/organizations/{id:int}", api.update_organization, "PUT"),
        ("/api/v2/organization_fields", api.organization_fields, "GET"),
        ("/api/v2/user_fields", api.user_fields, "GET"),
    ]
    routes = [
        Route(path + suffix, handler, methods=[method])
        for path, handler, method in table
        for suffix in ("", ".json")
    ]
    handlers = {ZendeskError: _error_response, HTTPException: _error_response}
    router = Starlette(routes=routes, exception_handlers={**handlers, Exception: _error_response})
    return SandboxApp(router, store, control)


def credentials(home: Path) -> dict[str, str]:
    """The sandbox's dev credentials, created with its database on first use."""
    store = _open_store(home)
    try:
        return dict(store.credentials)
    finally:
        store.close()
