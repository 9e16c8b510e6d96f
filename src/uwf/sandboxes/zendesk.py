"""Zendesk Support API v2 sandbox: the routes, bodies, limits and seed data of a real account.

Facts follow ``shared/crm-specs/CRM-FACTS.md`` (Zendesk) and developer.zendesk.com. Where
Zendesk's exact wording is unknown (malformed JSON, missing ``ticket``, the per-ticket update
limit) the body keeps Zendesk's classic ``{"error", "description"}`` form; docs/sandboxes.md
marks those as unverified.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from uwf.sandboxes._common import (
    IdempotencyLedger,
    KeyedLimit,
    LimitDecision,
    SandboxApp,
    SandboxControl,
    SandboxStore,
    StoredResponse,
    decode_cursor,
    encode_cursor,
    fingerprint,
    mark_write,
    next_id,
    public_base_url,
    utc_iso,
)

__all__ = ["ADMIN_EMAIL", "AGENTS", "SUBDOMAIN", "ZendeskProfile", "create_app", "credentials"]

Json = dict[str, Any]
Errors = dict[str, list[Json]]

SUBDOMAIN = "uwf-sandbox"
ADMIN_EMAIL = "admin@uwf-sandbox.test"
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")
TYPES = ("problem", "incident", "question", "task")
# (id, name, email, role, external_id). Users, groups, fields, audits and comments each get
# their own id range, so a user id can never pass for a ticket id (1..150) in a test.
AGENTS = (
    (10001, "Sandbox Admin", ADMIN_EMAIL, "admin", None),
    (10002, "Alice Agent", "alice@acme.test", "agent", None),
    (10003, "Bob Agent", "bob@acme.test", "agent", None),
    (10004, "Carol Agent", "carol@acme.test", "agent", None),
)
END_USERS = tuple(
    (20001 + n, f"{name} Customer", f"{name.lower()}@customer.test", "end-user", f"crm-{n + 1:04d}")
    for n, name in enumerate(("Dave", "Erin", "Frank", "Grace", "Heidi"))
)
GROUPS = ((3001, "Support"), (3002, "Billing"), (3003, "Escalations"))
TOPICS = (  # (subject, tag, group id); seed ticket i uses TOPICS[i % 8]
    ("Printer is offline", "hardware", 3001),
    ("Cannot log in", "access", 3001),
    ("Refund request", "billing", 3002),
    ("Invoice missing", "billing", 3002),
    ("Shipping delay", "shipping", 3001),
    ("Password reset", "access", 3001),
    ("Export fails with error 500", "bug", 3003),
    ("Feature request: dark mode", "feature", 3001),
)
ORDER_FIELD, REGION_FIELD = 360001, 360002  # custom ticket fields: text, tagger
REGIONS = ("emea", "amer", "apac")
_SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_MAX_ID = 2**63 - 1  # SQLite's INTEGER; larger ids cannot exist

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL, external_id TEXT, active INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, external_id TEXT, type TEXT, subject TEXT,
    description TEXT, priority TEXT, status TEXT NOT NULL, requester_id INTEGER,
    submitter_id INTEGER, assignee_id INTEGER, group_id INTEGER, tags TEXT NOT NULL,
    custom_fields TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL, audit_id INTEGER, author_id INTEGER,
    body TEXT NOT NULL, html_body TEXT NOT NULL, public INTEGER NOT NULL,
    metadata TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS comments_by_ticket ON comments (ticket_id, id);
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL, author_id INTEGER,
    events TEXT NOT NULL, metadata TEXT NOT NULL, created_at TEXT NOT NULL);
"""


class ZendeskError(Exception):
    """A response in Zendesk's own error format, raised from anywhere in a handler."""

    def __init__(self, status: int, body: Json, headers: Mapping[str, str] | None = None):
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def _not_found() -> ZendeskError:
    return ZendeskError(404, {"error": "RecordNotFound", "description": "Not found"})


def _record_invalid(details: Errors) -> ZendeskError:
    body = {"error": "RecordInvalid", "description": "Record validation errors"}
    return ZendeskError(422, {**body, "details": details})


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

# --------------------------------------------------------------------------- JSON shapes

_VIA = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
# Fields a real ticket/user carries that the sandbox never changes.
_TICKET_STATIC: Json = {
    "via": _VIA, "recipient": None, "organization_id": None, "collaborator_ids": [],
    "follower_ids": [], "email_cc_ids": [], "problem_id": None, "has_incidents": False,
    "is_public": True, "due_at": None, "satisfaction_rating": None, "sharing_agreement_ids": [],
    "followup_ids": [], "ticket_form_id": None, "brand_id": None, "allow_channelback": False,
    "allow_attachments": True, "from_messaging_channel": False,
}  # fmt: skip
_USER_STATIC: Json = {
    "time_zone": "UTC", "iana_time_zone": "Etc/UTC", "phone": None, "photo": None,
    "locale": "en-US", "locale_id": 1, "organization_id": None, "role_type": None,
    "verified": True, "tags": [], "alias": None, "shared": False, "suspended": False,
    "default_group_id": None, "user_fields": {},
}  # fmt: skip
_TICKET_COLUMNS = ("id", "external_id", "created_at", "updated_at", "type", "subject",
                   "description", "priority", "status", "requester_id", "submitter_id",
                   "assignee_id", "group_id")  # fmt: skip


def _ticket_json(row: Mapping[str, Any], base: str) -> Json:
    custom = json.loads(row["custom_fields"])
    fields = [{"id": f, "value": custom.get(str(f))} for f in (ORDER_FIELD, REGION_FIELD)]
    return {
        "url": f"{base}/api/v2/tickets/{row['id']}.json",
        **{column: row[column] for column in _TICKET_COLUMNS},
        "raw_subject": row["subject"],
        "tags": json.loads(row["tags"]),
        "custom_fields": fields,
        "fields": fields,
        **_TICKET_STATIC,
    }


def _user_json(row: Mapping[str, Any], base: str) -> Json:
    columns = ("id", "name", "email", "role", "external_id", "created_at", "updated_at")
    return {
        "url": f"{base}/api/v2/users/{row['id']}.json",
        **{column: row[column] for column in columns},
        "active": bool(row["active"]),
        "restricted_agent": row["role"] == "end-user",
        **_USER_STATIC,
    }


def _comment_json(row: Mapping[str, Any]) -> Json:
    return {
        "id": row["id"], "type": "Comment", "author_id": row["author_id"], "body": row["body"],
        "html_body": row["html_body"], "plain_body": row["body"], "public": bool(row["public"]),
        "attachments": [], "audit_id": row["audit_id"], "via": _VIA,
        "created_at": row["created_at"], "metadata": json.loads(row["metadata"]),
    }  # fmt: skip


def _ticket_fields(base: str) -> list[Json]:
    at = utc_iso(_SEED_EPOCH)

    def field(fid: int, kind: str, title: str, **extra: Any) -> Json:
        return {
            "url": f"{base}/api/v2/ticket_fields/{fid}.json", "id": fid, "type": kind,
            "title": title, "raw_title": title, "description": "", "position": fid % 100,
            "active": True, "required": False, "removable": fid > 100, "created_at": at,
            "updated_at": at, **extra,
        }  # fmt: skip

    def options(values: tuple[str, ...]) -> list[Json]:
        return [{"name": v.title(), "value": v} for v in values]

    regions = [
        {"id": 4000 + n, "name": r.upper(), "raw_name": r.upper(), "value": r, "default": False}
        for n, r in enumerate(REGIONS)
    ]
    return [
        field(1, "subject", "Subject"),
        field(2, "description", "Description"),
        field(3, "status", "Status", system_field_options=options(STATUSES)),
        field(4, "tickettype", "Type", system_field_options=options(TYPES)),
        field(5, "priority", "Priority", system_field_options=options(PRIORITIES)),
        field(6, "group", "Group"),
        field(7, "assignee", "Assignee"),
        field(ORDER_FIELD, "text", "Order number", regexp_for_validation=None),
        field(REGION_FIELD, "tagger", "Region", custom_field_options=regions),
    ]


# --------------------------------------------------------------------------- records


def _make_credentials() -> dict[str, str]:
    return {
        "subdomain": SUBDOMAIN,
        "email": ADMIN_EMAIL,
        "api_token": secrets.token_urlsafe(30),
        "auth": "basic email/token:api_token",
    }


def _seed(conn: sqlite3.Connection) -> None:
    """150 tickets whose fields follow from their id; ticket 123 is open/normal/unassigned."""
    at = utc_iso(_SEED_EPOCH)
    for user in (*AGENTS, *END_USERS):
        conn.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, 1, ?, ?)", (*user, at, at))
    conn.executemany("INSERT INTO groups VALUES (?, ?)", GROUPS)
    agents = [agent[0] for agent in AGENTS[1:]]
    for i in range(1, 151):
        status = ("new", "pending", "solved", "open", "hold", "open")[i % 6]
        status = "closed" if i % 25 == 0 else status
        assignee = None if status == "new" or i % 3 == 0 else agents[(i // 3) % 3]
        topic, tag, group = TOPICS[i % 8]
        custom = {str(REGION_FIELD): REGIONS[i % 3]}
        if tag == "billing":
            custom[str(ORDER_FIELD)] = f"ORD-{10000 + i}"
        requester = END_USERS[i % 5][0]
        row: Json = {
            "id": i, "type": (*TYPES, None)[i % 5], "subject": f"{topic} #{i}",
            "priority": None if i % 11 == 0 else ("low", "high", "urgent", "normal")[i % 4],
            "status": status, "requester_id": requester, "assignee_id": assignee,
            "group_id": group, "tags": [tag, "seed"], "custom_fields": custom,
        }  # fmt: skip
        created = _SEED_EPOCH + i * 3600
        description = f"Hi, {topic.lower()}. Details for seed ticket {i}."
        _insert_ticket(conn, row, requester, description, utc_iso(created))
        _insert_comment(conn, i, requester, description, False, True, {}, created)
        if status in ("pending", "solved", "closed"):
            reply = "Thanks, we are on it." if status == "pending" else "This is fixed now."
            _insert_comment(conn, i, assignee or agents[0], reply, False, True, {}, created + 600)


def _insert_ticket(
    conn: sqlite3.Connection, fields: Json, submitter: int, description: str, at: str
) -> int:
    row = {
        "external_id": None, "type": None, "subject": None, "priority": None,
        "requester_id": submitter, "assignee_id": None, "group_id": None, **fields,
        "submitter_id": submitter, "description": description, "created_at": at,
        "updated_at": at, "tags": json.dumps(fields.get("tags", [])),
        "custom_fields": json.dumps(fields.get("custom_fields", {})),
    }  # fmt: skip
    row.setdefault("status", "open" if row["assignee_id"] else "new")
    columns = ", ".join(row)
    placeholders = ", ".join("?" * len(row))
    sql = f"INSERT INTO tickets ({columns}) VALUES ({placeholders})"  # noqa: S608 - our column names
    return int(conn.execute(sql, tuple(row.values())).lastrowid or 0)


def _plain_text(text: str, is_html: bool) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip() if is_html else text


def _insert_comment(
    conn: sqlite3.Connection, ticket_id: int, author_id: int, text: str, is_html: bool,
    public: bool, metadata: Json, at: float | str, audit_id: int | None = None,
) -> Json:  # fmt: skip
    if is_html:
        html_body = text
    else:
        paragraphs = "".join(f'<p dir="auto">{html.escape(p)}</p>' for p in text.split("\n\n"))
        html_body = f'<div class="zd-comment" dir="auto">{paragraphs}</div>'
    row = {
        "id": next_id(conn, "event", 800001), "ticket_id": ticket_id,
        "audit_id": audit_id or next_id(conn, "audit", 700001), "author_id": author_id,
        "body": _plain_text(text, is_html), "html_body": html_body, "public": int(public),
        "metadata": json.dumps({"system": {}, "custom": {}, **metadata}),
        "created_at": at if isinstance(at, str) else utc_iso(at),
    }  # fmt: skip
    conn.execute(f"INSERT INTO comments VALUES ({', '.join(':' + k for k in row)})", row)  # noqa: S608 - our column names
    return _comment_json(row)


def _ticket_row(conn: sqlite3.Connection, ticket_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM tickets WHERE id = ?", (min(ticket_id, _MAX_ID),))
    return _found(row.fetchone())


def _user_row(conn: sqlite3.Connection, user_id: int) -> dict[str, Any]:
    return _found(
        conn.execute("SELECT * FROM users WHERE id = ?", (min(user_id, _MAX_ID),)).fetchone()
    )


def _found(row: sqlite3.Row | None) -> dict[str, Any]:
    if row is None:
        raise _not_found()
    return dict(row)


# --------------------------------------------------------------------------- pagination


@dataclass(frozen=True, slots=True)
class _Paging:
    cursor: bool
    size: int
    page: int = 1
    after: int | None = None
    before: int | None = None


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
    """A page of ``table`` by ascending id, plus the total (offset) or 1/0 for has_more."""
    if not paging.cursor:
        total = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0]  # noqa: S608 - table and where are literals of this module
        sql = f"SELECT * FROM {table} WHERE {where} ORDER BY id LIMIT ? OFFSET ?"  # noqa: S608
        rows = conn.execute(sql, (*args, paging.size, (paging.page - 1) * paging.size))
        return [dict(r) for r in rows], int(total)
    back = paging.before is not None
    op, order = ("<", "DESC") if back else (">", "ASC")
    sql = f"SELECT * FROM {table} WHERE {where} AND id {op} ? ORDER BY id {order} LIMIT ?"  # noqa: S608
    bound = paging.before if back else paging.after or 0
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


# --------------------------------------------------------------------------- validation

_LABELS = {"assignee_id": "Assignee", "group_id": "Group", "requester_id": "Requester"}


def _invalid(
    errors: Errors, field: str, error: str = "InvalidValue", what: str = "is invalid"
) -> None:
    label = _LABELS.get(field, field.replace("_", " ").capitalize())
    errors.setdefault(field, []).append({"description": f"{label} {what}", "error": error})


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _user_has_role(conn: sqlite3.Connection, user_id: Any, roles: tuple[str, ...]) -> bool:
    if not _is_id(user_id):
        return False
    row = conn.execute("SELECT role FROM users WHERE id = ? AND active = 1", (user_id,)).fetchone()
    return row is not None and row["role"] in roles


def _changes(conn: sqlite3.Connection, data: Json, errors: Errors) -> Json:
    """Validate the writable ticket fields in ``data``; return the column values to set."""
    agent, anyone = ("agent", "admin"), ("agent", "admin", "end-user")
    checks: dict[str, Callable[[Any], bool]] = {
        "subject": lambda v: v is None or isinstance(v, str),
        "external_id": lambda v: v is None or isinstance(v, str),
        "priority": lambda v: v is None or v in PRIORITIES,
        "status": lambda v: v in STATUSES,
        "type": lambda v: v is None or v in TYPES,
        "assignee_id": lambda v: v is None or _user_has_role(conn, v, agent),
        "requester_id": lambda v: _user_has_role(conn, v, anyone),
        "group_id": lambda v: v is None or (_is_id(v) and v in {g[0] for g in GROUPS}),
        "tags": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
        "custom_fields": lambda v: _custom_fields(v) is not None,
    }
    out: Json = {}
    for field, value in data.items():
        if field not in checks:
            continue  # Zendesk ignores fields it does not know or that are read-only
        if not checks[field](value):
            _invalid(errors, field)
        elif field == "tags":  # Zendesk lower-cases tags and splits them on whitespace
            out[field] = list(dict.fromkeys(w.lower() for t in value for w in t.split()))
        else:
            out[field] = _custom_fields(value) if field == "custom_fields" else value
    return out


def _custom_fields(value: Any) -> dict[str, Any] | None:
    """``[{id, value}]`` to ``{"<id>": value}``; None when invalid. Unknown ids are dropped."""
    if not isinstance(value, list):
        return None
    result: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, dict) or not _is_id(item.get("id")):
            return None
        fid, val = item["id"], item.get("value")
        if (fid == REGION_FIELD and val not in (None, *REGIONS)) or (
            fid == ORDER_FIELD and not (val is None or isinstance(val, str))
        ):
            return None
        if fid in (ORDER_FIELD, REGION_FIELD):
            result[str(fid)] = val
    return result


@dataclass(frozen=True, slots=True)
class _NewComment:
    text: str
    is_html: bool
    public: bool
    author_id: int | None


def _comment(conn: sqlite3.Connection, raw: Any, errors: Errors) -> _NewComment | None:
    """Validate ``ticket.comment``; None when absent or invalid."""
    if raw is None:
        return None
    raw = raw if isinstance(raw, dict) else {}
    is_html = raw.get("html_body") is not None
    text, public = raw.get("html_body" if is_html else "body"), raw.get("public", True)
    author = raw.get("author_id")
    if not isinstance(text, str) or not _plain_text(text, is_html):
        _invalid(errors, "comment", "BlankValue", "cannot be blank")
    if not isinstance(public, bool):
        _invalid(errors, "public")
    if author is not None and not _user_has_role(conn, author, ("agent", "admin", "end-user")):
        _invalid(errors, "author_id")
    if "comment" in errors or "public" in errors or "author_id" in errors:
        return None
    return _NewComment(str(text), is_html, bool(public), author)


def _ticket_param(body: Json) -> Json:
    ticket = body.get("ticket")
    if not isinstance(ticket, dict):
        description = "Parameter ticket is required"
        raise ZendeskError(400, {"error": "ParameterMissing", "description": description})
    return ticket


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
        items = [_ticket_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "tickets", items, paging, extra))

    async def show_ticket(self, request: Request) -> Response:
        await self.authenticate(request)
        row = await self.store.run(_ticket_row, request.path_params["id"])
        return JSONResponse({"ticket": _ticket_json(row, public_base_url(request))})

    async def list_comments(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _parse_paging(request)

        def work(conn: sqlite3.Connection, ticket_id: int) -> tuple[list[dict[str, Any]], int]:
            _ticket_row(conn, ticket_id)  # 404 for an unknown ticket, not an empty list
            return _fetch(conn, "comments", "ticket_id = ?", (ticket_id,), paging)

        rows, extra = await self.store.run(work, request.path_params["id"])
        items = [_comment_json(r) for r in rows]
        return JSONResponse(_page_body(request, "comments", items, paging, extra))

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
        data = _ticket_param(body)
        errors: Errors = {}
        fields = _changes(conn, data, errors)
        comment = _comment(conn, data.get("comment"), errors)
        if "comment" not in data:
            _invalid(errors, "description", "BlankValue", "cannot be blank")
        if isinstance(data.get("requester"), dict) and "requester_id" not in data:
            fields["requester_id"] = _find_or_create_requester(conn, data["requester"], errors)
        if errors or comment is None:
            raise _record_invalid(errors)
        now = utc_iso()
        description = _plain_text(comment.text, comment.is_html)
        ticket_id = _insert_ticket(conn, fields, caller.user_id, description, now)
        row = _ticket_row(conn, ticket_id)
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
        ticket = _ticket_json(row, base)
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
        current = _ticket_row(conn, ticket_id)
        data = _ticket_param(body)
        if current["status"] == "closed":
            error = {
                "description": "Status: closed prevents ticket update",
                "error": "ClosedPreventsUpdate",
            }
            raise _record_invalid({"status": [error]})
        errors: Errors = {}
        changes = _changes(conn, data, errors)
        comment = _comment(conn, data.get("comment"), errors)
        if errors:
            raise _record_invalid(errors)
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
                sql = f"UPDATE tickets SET {field} = ?, updated_at = ? WHERE id = ?"  # noqa: S608 - field is one of _changes' fixed keys
                conn.execute(sql, (stored, now, ticket_id))
        if comment is not None:
            conn.execute("UPDATE tickets SET updated_at = ? WHERE id = ?", (now, ticket_id))
        audit = self._audit(conn, caller, ticket_id, events, comment, data.get("metadata"), now)
        return {"ticket": _ticket_json(_ticket_row(conn, ticket_id), base), "audit": audit}

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, caller: _Caller, ticket_id: int, events: list[Json],
        comment: _NewComment | None, custom: Any, at: str,
    ) -> Json:  # fmt: skip
        """Store the audit of one write; the comment, if any, is its last event."""
        audit_id = next_id(conn, "audit", 700001)
        # `ticket.metadata` is how a client tags its own writes (UWF puts a correlation
        # marker there); Zendesk keeps it under metadata.custom of the audit and comment.
        metadata = {"system": caller.system, "custom": custom if isinstance(custom, dict) else {}}
        if comment is not None:
            author = comment.author_id or caller.user_id
            events.append(_insert_comment(conn, ticket_id, author, comment.text, comment.is_html,
                                          comment.public, metadata, at, audit_id))  # fmt: skip
        row = (audit_id, ticket_id, caller.user_id, json.dumps(events), json.dumps(metadata), at)
        conn.execute("INSERT INTO audits VALUES (?, ?, ?, ?, ?, ?)", row)
        audit = {"id": audit_id, "ticket_id": ticket_id, "created_at": at, "via": _VIA}
        return {**audit, "author_id": caller.user_id, "metadata": metadata, "events": events}

    async def list_users(self, request: Request) -> Response:
        await self.authenticate(request)
        paging = _parse_paging(request)
        rows, extra = await self.store.run(_fetch, "users", "1", (), paging)
        items = [_user_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(_page_body(request, "users", items, paging, extra))

    async def show_user(self, request: Request) -> Response:
        caller = await self.authenticate(request)
        row = await self.store.run(_user_row, request.path_params.get("id", caller.user_id))
        return JSONResponse({"user": _user_json(row, public_base_url(request))})

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
        items = [_user_json(r, public_base_url(request)) for r in rows]
        return JSONResponse(
            {"users": items, "next_page": None, "previous_page": None, "count": total}
        )

    async def ticket_fields(self, request: Request) -> Response:
        await self.authenticate(request)
        fields = _ticket_fields(public_base_url(request))
        body = {"ticket_fields": fields, "next_page": None, "previous_page": None}
        return JSONResponse({**body, "count": len(fields)})


def _find_or_create_requester(
    conn: sqlite3.Connection, requester: Json, errors: Errors
) -> int | None:
    email = requester.get("email")
    if not isinstance(email, str) or "@" not in email:
        _invalid(errors, "requester")
        return None
    row = conn.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
    if row is not None:
        return int(row["id"])
    user_id, now = next_id(conn, "user", 30001), utc_iso()
    name = requester.get("name") if isinstance(requester.get("name"), str) else email.split("@")[0]
    values = (user_id, name, email, now, now)
    conn.execute("INSERT INTO users VALUES (?, ?, ?, 'end-user', NULL, 1, ?, ?)", values)
    return user_id


# --------------------------------------------------------------------------- app factory


def _open_store(home: Path) -> SandboxStore:
    return SandboxStore(
        home / "sandboxes" / "zendesk.sqlite3",
        schema=_SCHEMA,
        seed=_seed,
        make_credentials=_make_credentials,
    )


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
        ("/api/v2/users", api.list_users, "GET"),
        ("/api/v2/users/me", api.show_user, "GET"),
        ("/api/v2/users/search", api.search_users, "GET"),
        ("/api/v2/users/{id:int}", api.show_user, "GET"),
        ("/api/v2/ticket_fields", api.ticket_fields, "GET"),
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
