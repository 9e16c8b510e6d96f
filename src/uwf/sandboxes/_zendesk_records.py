"""Zendesk sandbox records: schema, seed data, JSON shapes and field validation.

Everything here works on a `sqlite3.Connection` inside one `SandboxStore` unit of work and
knows nothing of HTTP; `zendesk` holds the routes. Helpers raise `ZendeskError` (Zendesk's
own error body) so a route can let them propagate to the error handler unchanged.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._store import next_id

__all__ = [
    "ADMIN_EMAIL",
    "AGENTS",
    "END_USERS",
    "ESCALATED_FIELD",
    "GROUPS",
    "ORDER_FIELD",
    "PRIORITIES",
    "REGIONS",
    "REGION_FIELD",
    "SCHEMA",
    "SEED_EPOCH",
    "STATUSES",
    "SUBDOMAIN",
    "TYPES",
    "VIA",
    "Errors",
    "NewComment",
    "ZendeskError",
    "audit_json",
    "comment_json",
    "find_or_create_requester",
    "insert_comment",
    "insert_ticket",
    "invalid",
    "make_credentials",
    "not_found",
    "plain_text",
    "record_invalid",
    "seed",
    "ticket_fields_json",
    "ticket_json",
    "ticket_param",
    "ticket_row",
    "user_json",
    "user_row",
    "validate_changes",
    "validate_comment",
]

Errors = dict[str, list[Json]]  # field -> [{description, error}], as in RecordInvalid

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
ESCALATED_FIELD = 360003  # custom ticket field: checkbox (true/false, never null once written)
_CUSTOM_FIELDS = (ORDER_FIELD, REGION_FIELD, ESCALATED_FIELD)
REGIONS = ("emea", "amer", "apac")
SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_MAX_ID = 2**63 - 1  # SQLite's INTEGER; larger ids cannot exist

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL, external_id TEXT UNIQUE COLLATE NOCASE, active INTEGER NOT NULL,
    phone TEXT, organization_id INTEGER, user_fields TEXT NOT NULL DEFAULT '{}',
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


def not_found() -> ZendeskError:
    """Zendesk's 404 for a record id that does not exist."""
    return ZendeskError(404, {"error": "RecordNotFound", "description": "Not found"})


def record_invalid(details: Errors) -> ZendeskError:
    """Zendesk's 422 listing every invalid field."""
    body = {"error": "RecordInvalid", "description": "Record validation errors"}
    return ZendeskError(422, {**body, "details": details})


# --------------------------------------------------------------------------- JSON shapes

VIA = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
# Fields a real ticket/user carries that the sandbox never changes.
_TICKET_STATIC: Json = {
    "via": VIA, "recipient": None, "organization_id": None, "collaborator_ids": [],
    "follower_ids": [], "email_cc_ids": [], "problem_id": None, "has_incidents": False,
    "is_public": True, "due_at": None, "satisfaction_rating": None, "sharing_agreement_ids": [],
    "followup_ids": [], "ticket_form_id": None, "brand_id": None, "allow_channelback": False,
    "allow_attachments": True, "from_messaging_channel": False,
}  # fmt: skip
_USER_STATIC: Json = {
    "time_zone": "UTC", "iana_time_zone": "Etc/UTC", "photo": None,
    "locale": "en-US", "locale_id": 1, "role_type": None,
    "verified": True, "tags": [], "alias": None, "shared": False, "suspended": False,
    "default_group_id": None,
}  # fmt: skip
_USER_INSERT = "id, name, email, role, external_id, active, created_at, updated_at"
_TICKET_COLUMNS = ("id", "external_id", "created_at", "updated_at", "type", "subject",
                   "description", "priority", "status", "requester_id", "submitter_id",
                   "assignee_id", "group_id")  # fmt: skip


def ticket_json(row: Mapping[str, Any], base: str) -> Json:
    """A ``tickets`` row as Zendesk returns it; ``base`` prefixes the record URL."""
    custom = json.loads(row["custom_fields"])
    fields = [{"id": f, "value": custom.get(str(f))} for f in _CUSTOM_FIELDS]
    return {
        "url": f"{base}/api/v2/tickets/{row['id']}.json",
        **{column: row[column] for column in _TICKET_COLUMNS},
        "raw_subject": row["subject"],
        "tags": json.loads(row["tags"]),
        "custom_fields": fields,
        "fields": fields,
        **_TICKET_STATIC,
    }


def user_json(row: Mapping[str, Any], base: str) -> Json:
    """A ``users`` row as Zendesk returns it."""
    columns = ("id", "name", "email", "role", "external_id", "phone", "organization_id",
               "created_at", "updated_at")  # fmt: skip
    return {
        "url": f"{base}/api/v2/users/{row['id']}.json",
        **{column: row[column] for column in columns},
        "active": bool(row["active"]),
        "restricted_agent": row["role"] == "end-user",
        "user_fields": json.loads(row["user_fields"]),
        **_USER_STATIC,
    }


def comment_json(row: Mapping[str, Any]) -> Json:
    """A ``comments`` row as Zendesk returns it (also the Comment event of an audit)."""
    return {
        "id": row["id"], "type": "Comment", "author_id": row["author_id"], "body": row["body"],
        "html_body": row["html_body"], "plain_body": row["body"], "public": bool(row["public"]),
        "attachments": [], "audit_id": row["audit_id"], "via": VIA,
        "created_at": row["created_at"], "metadata": json.loads(row["metadata"]),
    }  # fmt: skip


def ticket_fields_json(base: str) -> list[Json]:
    """The account's ticket fields: the system ones plus the two custom fields."""
    at = utc_iso(SEED_EPOCH)

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
        field(ESCALATED_FIELD, "checkbox", "Escalated", tag="escalated"),
    ]


# --------------------------------------------------------------------------- records


def make_credentials() -> dict[str, str]:
    """Fresh dev credentials for a new database (email/token Basic auth)."""
    return {
        "subdomain": SUBDOMAIN,
        "email": ADMIN_EMAIL,
        "api_token": secrets.token_urlsafe(30),
        "auth": "basic email/token:api_token",
    }


def seed(conn: sqlite3.Connection) -> None:
    """150 tickets whose fields follow from their id; ticket 123 is open/normal/unassigned."""
    at = utc_iso(SEED_EPOCH)
    for user in (*AGENTS, *END_USERS):
        sql = f"INSERT INTO users ({_USER_INSERT}) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"  # noqa: S608
        conn.execute(sql, (*user, at, at))
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
        created = SEED_EPOCH + i * 3600
        description = f"Hi, {topic.lower()}. Details for seed ticket {i}."
        insert_ticket(conn, row, requester, description, utc_iso(created))
        _seed_comment(conn, i, requester, description, created)
        if status in ("pending", "solved", "closed"):
            reply = "Thanks, we are on it." if status == "pending" else "This is fixed now."
            _seed_comment(conn, i, assignee or agents[0], reply, created + 600)


def _seed_comment(
    conn: sqlite3.Connection, ticket_id: int, author_id: int, text: str, at: float
) -> None:
    """A seeded public comment and its audit (every Zendesk comment is an audit's event)."""
    event = insert_comment(conn, ticket_id, author_id, text, False, True, {}, at)
    row = (event["audit_id"], ticket_id, author_id, json.dumps([event]),
           json.dumps({"system": {}, "custom": {}}), event["created_at"])  # fmt: skip
    conn.execute("INSERT INTO audits VALUES (?, ?, ?, ?, ?, ?)", row)


def audit_json(row: Mapping[str, Any]) -> Json:
    """An ``audits`` row as Zendesk lists it."""
    return {
        "id": row["id"], "ticket_id": row["ticket_id"], "created_at": row["created_at"],
        "author_id": row["author_id"], "metadata": json.loads(row["metadata"]), "via": VIA,
        "events": json.loads(row["events"]),
    }  # fmt: skip


def insert_ticket(
    conn: sqlite3.Connection, fields: Json, submitter: int, description: str, at: str
) -> int:
    """Store a ticket with defaults for the fields ``fields`` lacks; returns its id."""
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


def plain_text(text: str, is_html: bool) -> str:
    """The text of a comment body, tags stripped when it is HTML."""
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip() if is_html else text


def insert_comment(
    conn: sqlite3.Connection, ticket_id: int, author_id: int, text: str, is_html: bool,
    public: bool, metadata: Json, at: float | str, audit_id: int | None = None,
) -> Json:  # fmt: skip
    """Store a comment (and its audit id if not given); returns its JSON."""
    if is_html:
        html_body = text
    else:
        paragraphs = "".join(f'<p dir="auto">{html.escape(p)}</p>' for p in text.split("\n\n"))
        html_body = f'<div class="zd-comment" dir="auto">{paragraphs}</div>'
    row = {
        "id": next_id(conn, "event", 800001), "ticket_id": ticket_id,
        "audit_id": audit_id or next_id(conn, "audit", 700001), "author_id": author_id,
        "body": plain_text(text, is_html), "html_body": html_body, "public": int(public),
        "metadata": json.dumps({"system": {}, "custom": {}, **metadata}),
        "created_at": at if isinstance(at, str) else utc_iso(at),
    }  # fmt: skip
    conn.execute(f"INSERT INTO comments VALUES ({', '.join(':' + k for k in row)})", row)  # noqa: S608 - our column names
    return comment_json(row)


def ticket_row(conn: sqlite3.Connection, ticket_id: int) -> dict[str, Any]:
    """The ``tickets`` row of ``ticket_id``; `not_found` if there is none."""
    row = conn.execute("SELECT * FROM tickets WHERE id = ?", (min(ticket_id, _MAX_ID),))
    return _found(row.fetchone())


def user_row(conn: sqlite3.Connection, user_id: int) -> dict[str, Any]:
    """The ``users`` row of ``user_id``; `not_found` if there is none."""
    return _found(
        conn.execute("SELECT * FROM users WHERE id = ?", (min(user_id, _MAX_ID),)).fetchone()
    )


def _found(row: sqlite3.Row | None) -> dict[str, Any]:
    if row is None:
        raise not_found()
    return dict(row)


# --------------------------------------------------------------------------- validation

_LABELS = {"assignee_id": "Assignee", "group_id": "Group", "requester_id": "Requester"}


def invalid(
    errors: Errors, field: str, error: str = "InvalidValue", what: str = "is invalid"
) -> None:
    """Add one Zendesk validation error for ``field`` to ``errors``."""
    label = _LABELS.get(field, field.replace("_", " ").capitalize())
    errors.setdefault(field, []).append({"description": f"{label} {what}", "error": error})


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _user_has_role(conn: sqlite3.Connection, user_id: Any, roles: tuple[str, ...]) -> bool:
    if not _is_id(user_id):
        return False
    row = conn.execute("SELECT role FROM users WHERE id = ? AND active = 1", (user_id,)).fetchone()
    return row is not None and row["role"] in roles


def validate_changes(conn: sqlite3.Connection, data: Json, errors: Errors) -> Json:
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
            invalid(errors, field)
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
        if (
            (fid == REGION_FIELD and val not in (None, *REGIONS))
            or (fid == ORDER_FIELD and not (val is None or isinstance(val, str)))
            or (fid == ESCALATED_FIELD and not isinstance(val, bool))
        ):
            return None
        if fid in _CUSTOM_FIELDS:
            result[str(fid)] = val
    return result


@dataclass(frozen=True, slots=True)
class NewComment:
    """A validated ``ticket.comment``."""

    text: str
    is_html: bool
    public: bool
    author_id: int | None


def validate_comment(conn: sqlite3.Connection, raw: Any, errors: Errors) -> NewComment | None:
    """Validate ``ticket.comment``; None when absent or invalid."""
    if raw is None:
        return None
    raw = raw if isinstance(raw, dict) else {}
    is_html = raw.get("html_body") is not None
    text, public = raw.get("html_body" if is_html else "body"), raw.get("public", True)
    author = raw.get("author_id")
    if not isinstance(text, str) or not plain_text(text, is_html):
        invalid(errors, "comment", "BlankValue", "cannot be blank")
    if not isinstance(public, bool):
        invalid(errors, "public")
    if author is not None and not _user_has_role(conn, author, ("agent", "admin", "end-user")):
        invalid(errors, "author_id")
    if "comment" in errors or "public" in errors or "author_id" in errors:
        return None
    return NewComment(str(text), is_html, bool(public), author)


def ticket_param(body: Json) -> Json:
    """The ``ticket`` object of a create/update body; 400 ParameterMissing without it."""
    ticket = body.get("ticket")
    if not isinstance(ticket, dict):
        description = "Parameter ticket is required"
        raise ZendeskError(400, {"error": "ParameterMissing", "description": description})
    return ticket


def find_or_create_requester(
    conn: sqlite3.Connection, requester: Json, errors: Errors
) -> int | None:
    """The id of the user with ``requester.email``, created as an end-user if new."""
    email = requester.get("email")
    if not isinstance(email, str) or "@" not in email:
        invalid(errors, "requester")
        return None
    row = conn.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
    if row is not None:
        return int(row["id"])
    user_id, now = next_id(conn, "user", 30001), utc_iso()
    name = requester.get("name") if isinstance(requester.get("name"), str) else email.split("@")[0]
    values = (user_id, name, email, now, now)
    sql = f"INSERT INTO users ({_USER_INSERT}) VALUES (?, ?, ?, 'end-user', NULL, 1, ?, ?)"  # noqa: S608
    conn.execute(sql, values)
    return user_id
