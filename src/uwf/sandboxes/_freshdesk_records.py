"""Freshdesk sandbox records: schema, seed data, JSON shapes and field validation.

Everything here works on a `sqlite3.Connection` inside one `SandboxStore` unit of work and
knows nothing of HTTP; `freshdesk` holds the routes. Helpers raise `FreshdeskError` (Freshdesk's
own error body) so a route can let them propagate to the error handler unchanged.

Wording of the error messages follows Freshdesk's ``api/lib/error_messages.yml`` (as published
in a public mirror of its source) and the API reference: ``{"description": "Validation failed",
"errors": [{"field", "message", "code"}]}`` for field errors, ``{"code", "message"}`` for
request errors and an empty body for 404.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import secrets
import sqlite3
import string
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._store import get_meta, next_id

__all__ = [
    "ADMIN_EMAIL", "AGENTS", "CONTACTS", "CUSTOM_FIELDS", "DOMAIN", "GROUPS", "MAX_STRING",
    "PRIORITIES", "QUICKSTART_TICKET", "SCHEMA", "STATUSES", "TYPES", "FreshdeskError",
    "agent_json", "as_html", "error", "hash_secret", "insert_note", "insert_ticket",
    "invalid_field", "make_credentials", "matches", "mismatch", "not_included", "note_json",
    "parse_query", "plain_text", "request_error", "seed", "ticket_fields_json", "ticket_json",
    "ticket_row", "too_long", "validate_note", "validate_ticket", "validation_failed",
]  # fmt: skip

DOMAIN = "uwf-sandbox.freshdesk.com"
ADMIN_EMAIL = "admin@uwf-sandbox.test"
# Freshdesk ids are large account-wide numbers; each kind gets its own range so an agent id
# can never pass for a ticket id (1101..) in a test.
AGENTS = (  # (id, name, email, role)
    (43000000001, "Sandbox Admin", ADMIN_EMAIL, "admin"),
    (43000000002, "Alice Agent", "alice@acme.test", "agent"),
    (43000000003, "Bob Agent", "bob@acme.test", "agent"),
    (43000000004, "Carol Agent", "carol@acme.test", "agent"),
)
CONTACTS = tuple(
    (43000000101 + n, f"{name} Customer", f"{name.lower()}@customer.test")
    for n, name in enumerate(("Dave", "Erin", "Frank", "Grace", "Heidi"))
)
GROUPS = ((43000000201, "Support"), (43000000202, "Billing"), (43000000203, "Escalations"))
# status -> (agent label, customer label), as /ticket_fields lists them.
STATUSES = {
    2: ("Open", "Being Processed"),
    3: ("Pending", "Awaiting your Reply"),
    4: ("Resolved", "This ticket has been Resolved"),
    5: ("Closed", "This ticket has been Closed"),
}
PRIORITIES = {1: "Low", 2: "Medium", 3: "High", 4: "Urgent"}
SOURCES = {1: "Email", 2: "Portal", 3: "Phone", 7: "Chat", 9: "Feedback Widget",
           10: "Outbound Email"}  # fmt: skip
TYPES = ("Question", "Incident", "Problem", "Feature Request", "Refund")
REGIONS = ("EMEA", "AMER", "APAC")
# Custom ticket fields: name -> (id, type, label, choices). `cf_uwf_step_key` is the text field
# UWF's connector writes its correlation marker to (see docs/crms/freshdesk.md).
CUSTOM_FIELDS: dict[str, tuple[int, str, str, tuple[str, ...]]] = {
    "cf_order_number": (43000000311, "custom_text", "Order number", ()),
    "cf_region": (43000000312, "custom_dropdown", "Region", REGIONS),
    "cf_uwf_step_key": (43000000313, "custom_text", "UWF step key", ()),
}
QUICKSTART_TICKET = 1123
_FIRST_SEED, _LAST_SEED = 1101, 1160
TOPICS = (  # (subject, tag); seed ticket k uses TOPICS[k % 8]
    ("Printer is offline", "hardware"), ("Cannot log in", "access"),
    ("Refund request", "billing"), ("Invoice missing", "billing"),
    ("Shipping delay", "shipping"), ("Password reset", "access"),
    ("Export fails with error 500", "bug"), ("Feature request: dark mode", "feature"),
)  # fmt: skip
_SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_MAX_ID = 2**63 - 1  # SQLite's INTEGER; larger ids cannot exist
MAX_STRING, MAX_TAG = 255, 32  # ApiConstants::MAX_LENGTH_STRING, TAG_MAX_LENGTH_STRING

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL, api_key TEXT NOT NULL UNIQUE, password_hash TEXT,
    active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE COLLATE NOCASE,
    password_hash TEXT, active INTEGER NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT, description TEXT NOT NULL,
    description_text TEXT NOT NULL, status INTEGER NOT NULL, priority INTEGER NOT NULL,
    source INTEGER NOT NULL, type TEXT, requester_id INTEGER NOT NULL, responder_id INTEGER,
    group_id INTEGER, tags TEXT NOT NULL, custom_fields TEXT NOT NULL, due_by TEXT NOT NULL,
    fr_due_by TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL, body TEXT NOT NULL,
    body_text TEXT NOT NULL, private INTEGER NOT NULL, incoming INTEGER NOT NULL,
    source INTEGER NOT NULL, user_id INTEGER NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_by_ticket ON conversations (ticket_id, id);
"""

# --------------------------------------------------------------------------- errors


class FreshdeskError(Exception):
    """A response in Freshdesk's own format; ``body`` None is Freshdesk's empty-bodied 404."""

    def __init__(
        self, status: int, body: Json | None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def error(field: str, message: str, code: str = "invalid_value") -> Json:
    """One entry of a validation error's ``errors`` list."""
    return {"field": field, "message": message, "code": code}


def validation_failed(errors: list[Json]) -> FreshdeskError:
    """400 listing every invalid field (Freshdesk's 409 ``duplicate_value`` has no case here)."""
    return FreshdeskError(400, {"description": "Validation failed", "errors": errors})


def request_error(status: int, code: str, message: str) -> FreshdeskError:
    """A request-level error: 401 ``invalid_credentials``, 403 ``access_denied``, …."""
    return FreshdeskError(status, {"code": code, "message": message})


def _type_name(value: Any) -> str:
    """The Ruby class name Freshdesk reports in "Value set is of type …" messages."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    names = {int: "Integer", float: "Number", str: "String", list: "Array", dict: "key/value pair"}
    return names.get(type(value), type(value).__name__)


def mismatch(field: str, value: Any, expected: str) -> Json:
    """``datatype_mismatch`` as Freshdesk words it (input_received + datatype_mismatch)."""
    message = f"Value set is of type {_type_name(value)}.It should be a/an {expected}"
    return error(field, message, "datatype_mismatch")


def not_included(field: str, allowed: Any) -> Json:
    """``not_included``: the value is not one of the allowed ones."""
    listed = ",".join(str(v) for v in allowed)
    return error(field, f"It should be one of these values: '{listed}'")


def invalid_field(field: str) -> Json:
    """A field the endpoint does not accept: Freshdesk refuses it instead of ignoring it."""
    return error(field, "Unexpected/invalid field in request", "invalid_field")


def too_long(field: str, value: str, limit: int) -> Json:
    """``too_long``: a string longer than the field allows."""
    count = len(value)
    return error(field, f"Has {count} characters, it can have maximum of {limit} characters")


# --------------------------------------------------------------------------- JSON shapes


def plain_text(body_html: str) -> str:
    """The text of an HTML body, as Freshdesk's ``body_text`` / ``description_text``."""
    text = re.sub(r"<br\s*/?>", "\n", body_html, flags=re.IGNORECASE)
    text = re.sub(r"</(p|div)>\s*(?=<)", "\n", text, flags=re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def as_html(body: str) -> str:
    """Freshdesk stores bodies as HTML; plain text is wrapped the way its editor would."""
    if re.search(r"<[a-zA-Z/][^>]*>", body):
        return body
    return "<div>" + html.escape(body, quote=False).replace("\n", "<br>") + "</div>"


def _due(created: str, hours: int) -> str:
    moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ") + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_TICKET_STATIC: Json = {
    "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "ticket_cc_emails": [],
    "fr_escalated": False, "spam": False, "email_config_id": None, "company_id": None,
    "association_type": None, "support_email": None, "to_emails": None, "product_id": None,
    "is_escalated": False, "attachments": [], "nr_due_by": None, "nr_escalated": False,
}  # fmt: skip
_TICKET_COLUMNS = ("id", "subject", "status", "priority", "source", "type", "requester_id",
                   "responder_id", "group_id", "due_by", "fr_due_by", "created_at",
                   "updated_at")  # fmt: skip


def ticket_json(row: Mapping[str, Any], *, description: bool = True) -> Json:
    """A ``tickets`` row as Freshdesk returns it; lists omit the description."""
    custom = json.loads(row["custom_fields"])
    ticket = {
        **_TICKET_STATIC,
        **{column: row[column] for column in _TICKET_COLUMNS},
        "tags": json.loads(row["tags"]),
        "custom_fields": {name: custom.get(name) for name in CUSTOM_FIELDS},
    }
    if description:
        ticket["description"] = row["description"]
        ticket["description_text"] = row["description_text"]
    return ticket


def note_json(row: Mapping[str, Any]) -> Json:
    """A ``conversations`` row (note or reply) as Freshdesk returns it."""
    return {
        "body": row["body"], "body_text": row["body_text"], "id": row["id"],
        "incoming": bool(row["incoming"]), "private": bool(row["private"]),
        "user_id": row["user_id"], "support_email": None, "source": row["source"],
        "ticket_id": row["ticket_id"], "to_emails": [], "from_email": None,
        "cc_emails": [], "bcc_emails": [], "attachments": [],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }  # fmt: skip


def agent_json(row: Mapping[str, Any]) -> Json:
    """An ``agents`` row as ``/agents`` returns it: the person is under ``contact``."""
    contact = {
        "active": bool(row["active"]), "email": row["email"], "job_title": None,
        "language": "en", "last_login_at": None, "mobile": None, "name": row["name"],
        "phone": None, "time_zone": "UTC", "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }  # fmt: skip
    return {
        "available": True, "occasional": False, "id": row["id"], "signature": None,
        "ticket_scope": 1, "group_ids": [], "role_ids": [], "skill_ids": [],
        "available_since": None, "type": "support_agent", "focus_mode": True,
        "contact": contact, "created_at": row["created_at"], "updated_at": row["updated_at"],
    }  # fmt: skip


def ticket_fields_json() -> list[Json]:
    """``GET /ticket_fields``: the default fields with their choices, then the custom ones."""
    at = utc_iso(_SEED_EPOCH)

    def field(fid: int, name: str, label: str, kind: str, **extra: Any) -> Json:
        return {
            "id": fid, "name": name, "label": label, "description": label, "position": fid % 100,
            "required_for_closure": False, "required_for_agents": name in ("subject", "status"),
            "type": kind, "default": kind.startswith("default_"),
            "customers_can_edit": kind != "default_status", "label_for_customers": label,
            "required_for_customers": False, "displayed_to_customers": True,
            "created_at": at, "updated_at": at, **extra,
        }  # fmt: skip

    base = 43000000301
    fields = [
        field(base, "requester", "Search a requester", "default_requester"),
        field(base + 1, "subject", "Subject", "default_subject"),
        field(base + 2, "ticket_type", "Type", "default_ticket_type", choices=list(TYPES)),
        field(base + 3, "source", "Source", "default_source",
              choices={name: sid for sid, name in SOURCES.items()}),
        field(base + 4, "status", "Status", "default_status",
              choices={str(sid): list(labels) for sid, labels in STATUSES.items()}),
        field(base + 5, "priority", "Priority", "default_priority",
              choices={name: pid for pid, name in PRIORITIES.items()}),
        field(base + 6, "group", "Group", "default_group",
              choices={name: gid for gid, name in GROUPS}),
        field(base + 7, "agent", "Agent", "default_agent",
              choices={name: aid for aid, name, _, _ in AGENTS}),
        field(base + 8, "description", "Description", "default_description"),
    ]  # fmt: skip
    for name, (fid, kind, label, choices) in CUSTOM_FIELDS.items():
        extra = {"choices": list(choices)} if choices else {}
        fields.append(field(fid, name, label, kind, **extra))
    return fields


# --------------------------------------------------------------------------- records


def hash_secret(value: str) -> str:
    """Passwords are kept hashed even in a dev sandbox; the SQLite file may be shared."""
    return hashlib.sha256(value.encode()).hexdigest()


def _api_key() -> str:
    # Freshdesk API keys are 20 letters and digits (e.g. "MX4CEAw4FogInimEdRW2").
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


def make_credentials() -> dict[str, str]:
    """Fresh dev credentials for a new database: the admin's API key and password."""
    return {
        "domain": DOMAIN,
        "api_key": _api_key(),
        "email": ADMIN_EMAIL,
        "password": secrets.token_urlsafe(12),
        "contact_email": CONTACTS[0][2],
        "contact_password": secrets.token_urlsafe(12),
        "auth": "basic api_key:X (or email:password)",
    }


def seed(conn: sqlite3.Connection) -> None:
    """Agents, contacts, groups and tickets 1101-1160; 1123 is open/medium/unassigned."""
    creds = get_meta(conn, "credentials")
    at = utc_iso(_SEED_EPOCH)
    for aid, name, email, role in AGENTS:
        # Every agent has a personal API key; only the admin's is handed out as a credential.
        admin = role == "admin"
        key = creds["api_key"] if admin else _api_key()
        password = hash_secret(creds["password"]) if admin else None
        row = (aid, name, email, role, key, password, at, at)
        conn.execute("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)", row)
    for cid, name, email in CONTACTS:
        password = hash_secret(creds["contact_password"]) if cid == CONTACTS[0][0] else None
        conn.execute(
            "INSERT INTO contacts (id, name, email, password_hash, active, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
            (cid, name, email, password, at, at),
        )
    conn.executemany("INSERT INTO groups VALUES (?, ?)", GROUPS)
    agents = [a[0] for a in AGENTS[1:]]
    for ticket_id in range(_FIRST_SEED, _LAST_SEED + 1):
        k = ticket_id - 1100
        topic, tag = TOPICS[k % 8]
        custom: Json = {"cf_region": REGIONS[k % 3]}
        if tag == "billing":
            custom["cf_order_number"] = f"ORD-{10000 + k}"
        fields: Json = {
            "id": ticket_id, "subject": f"{topic} #{ticket_id}",
            "status": (2, 3, 4, 5, 2, 2)[k % 6], "priority": (1, 2, 3, 4)[k % 4],
            "source": (1, 2, 3)[k % 3], "type": (*TYPES, None)[k % 6],
            "responder_id": None if k % 3 == 0 else agents[k % 3], "group_id": GROUPS[k % 3][0],
            "requester_id": CONTACTS[k % 5][0], "tags": [tag, "seed"], "custom_fields": custom,
        }  # fmt: skip
        if ticket_id == QUICKSTART_TICKET:  # the quickstart record: nothing done to it yet
            fields.update(status=2, priority=2, responder_id=None)
        created = _SEED_EPOCH + k * 5 * 3600
        text = f"Hi, {topic.lower()}. Details for seed ticket {ticket_id}."
        insert_ticket(conn, fields, as_html(text), utc_iso(created))
        agent = fields["responder_id"] or agents[0]
        if ticket_id != QUICKSTART_TICKET and fields["status"] != 2:
            reply = "Thanks, we are on it." if fields["status"] == 3 else "This is fixed now."
            insert_note(conn, ticket_id, agent, as_html(reply), False, utc_iso(created + 600), 0)
        if ticket_id != QUICKSTART_TICKET and k % 4 == 0:
            note = "Customer is on the enterprise plan."
            insert_note(conn, ticket_id, agent, as_html(note), True, utc_iso(created + 900))


def insert_ticket(conn: sqlite3.Connection, fields: Json, description: str, at: str) -> int:
    """Store a ticket with Freshdesk's defaults for what ``fields`` lacks; returns its id."""
    row = {
        "subject": None, "status": 2, "priority": 1, "source": 2, "type": None,
        "responder_id": None, "group_id": None, **fields,
        "description": description, "description_text": plain_text(description),
        "tags": json.dumps(fields.get("tags", [])),
        "custom_fields": json.dumps(fields.get("custom_fields", {})),
        "due_by": _due(at, 72), "fr_due_by": _due(at, 24), "created_at": at, "updated_at": at,
    }  # fmt: skip
    columns = ", ".join(row)
    sql = f"INSERT INTO tickets ({columns}) VALUES ({', '.join('?' * len(row))})"  # noqa: S608 - our column names
    return int(conn.execute(sql, tuple(row.values())).lastrowid or 0)


def insert_note(
    conn: sqlite3.Connection, ticket_id: int, user_id: int, body: str, private: bool,
    at: str, source: int = 2,
) -> Json:  # fmt: skip
    """Store a note (source 2) or reply (source 0); returns its JSON."""
    row = {
        "id": next_id(conn, "conversation", 43000010001), "ticket_id": ticket_id,
        "body": body, "body_text": plain_text(body), "private": int(private), "incoming": 0,
        "source": source, "user_id": user_id, "created_at": at, "updated_at": at,
    }  # fmt: skip
    conn.execute(f"INSERT INTO conversations VALUES ({', '.join(':' + k for k in row)})", row)  # noqa: S608 - our column names
    conn.execute("UPDATE tickets SET updated_at = ? WHERE id = ?", (at, ticket_id))
    return note_json(row)


def ticket_row(conn: sqlite3.Connection, ticket_id: int) -> dict[str, Any]:
    """The ``tickets`` row of ``ticket_id``; Freshdesk's empty 404 if there is none."""
    found = conn.execute("SELECT * FROM tickets WHERE id = ?", (min(ticket_id, _MAX_ID),))
    row = found.fetchone()
    if row is None:
        raise FreshdeskError(404, None)
    return dict(row)


# --------------------------------------------------------------------------- validation

_TICKET_FIELDS = frozenset({
    "subject", "description", "status", "priority", "source", "type", "responder_id",
    "group_id", "tags", "custom_fields", "requester_id", "email", "name", "cc_emails",
    "due_by", "fr_due_by",
})  # fmt: skip
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _one_of(value: Any, allowed: Mapping[int, Any]) -> bool:
    # JSON true would pass `in` as 1: Freshdesk wants the integer itself.
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def _exists(conn: sqlite3.Connection, table: str, record_id: int) -> bool:
    sql = f"SELECT 1 FROM {table} WHERE id = ? AND active = 1"  # noqa: S608 - table is a literal of this module
    if table == "groups":
        sql = "SELECT 1 FROM groups WHERE id = ?"
    return conn.execute(sql, (record_id,)).fetchone() is not None


def _reference(conn: sqlite3.Connection, field: str, value: Any, table: str, what: str) -> Json:
    """Check an id field; returns the error or {} when fine."""
    if not _is_id(value):
        return mismatch(field, value, "Positive Integer")
    if not _exists(conn, table, value):
        return error(field, f"There is no {what} matching the given {field}")
    return {}


def _custom_fields(value: Any, errors: list[Json]) -> Json:
    if not isinstance(value, dict):
        errors.append(mismatch("custom_fields", value, "key/value pair"))
        return {}
    out: Json = {}
    for name, item in value.items():
        if name not in CUSTOM_FIELDS:
            errors.append(invalid_field(name))
            continue
        _, kind, _, choices = CUSTOM_FIELDS[name]
        if item is None:
            out[name] = None
        elif kind == "custom_dropdown" and item not in choices:
            errors.append(not_included(name, choices))
        elif kind == "custom_text" and not isinstance(item, str):
            errors.append(mismatch(name, item, "String"))
        elif isinstance(item, str) and len(item) > MAX_STRING:
            errors.append(too_long(name, item, MAX_STRING))
        else:
            out[name] = item
    return out


def _tags(value: Any, errors: list[Json]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        errors.append(mismatch("tags", value, "Array"))
        return []
    tags = list(dict.fromkeys(t.strip() for t in value if t.strip()))
    if any("," in t for t in tags):
        chars = "It should not have strings containing the special characters: ','"
        errors.append(error("tags", chars))
    elif any(len(t) > MAX_TAG for t in tags):
        limit = f"It should only contain elements that have maximum of {MAX_TAG} characters"
        errors.append(error("tags", limit))
    return tags


def validate_ticket(conn: sqlite3.Connection, body: Json, *, creating: bool) -> Json:
    """Validate a create/update body; returns the columns to set, or raises 400 with all errors.

    On create, ``email`` (with an optional ``name``) becomes ``requester_id``, making a new
    contact when no one has that email, as Freshdesk does.
    """
    errors: list[Json] = []
    out: Json = {}
    for field, value in body.items():
        if field not in _TICKET_FIELDS:
            errors.append(invalid_field(field))
        elif field in ("subject", "description", "name"):
            if not isinstance(value, str):
                errors.append(mismatch(field, value, "String"))
            elif field != "description" and len(value) > MAX_STRING:
                errors.append(too_long(field, value, MAX_STRING))
            elif field != "name":
                out[field] = value.strip() if field == "subject" else value
        elif field == "status" and not _one_of(value, STATUSES):
            errors.append(not_included(field, STATUSES))
        elif field == "priority" and not _one_of(value, PRIORITIES):
            errors.append(not_included(field, PRIORITIES))
        elif field == "source" and not _one_of(value, SOURCES):
            errors.append(not_included(field, SOURCES))
        elif field == "type" and value is not None and value not in TYPES:
            errors.append(not_included(field, TYPES))
        elif field in ("status", "priority", "source", "type"):
            out[field] = value
        elif field in ("responder_id", "group_id", "requester_id"):
            table, what = {"responder_id": ("agents", "agent"), "group_id": ("groups", "group"),
                           "requester_id": ("contacts", "contact")}[field]  # fmt: skip
            problem = {} if value is None and field != "requester_id" else (
                _reference(conn, field, value, table, what))  # fmt: skip
            if problem:
                errors.append(problem)
            else:
                out[field] = value
        elif field == "tags":
            out[field] = _tags(value, errors)
        elif field == "custom_fields":
            out[field] = _custom_fields(value, errors)
        elif field == "email" and not (isinstance(value, str) and _EMAIL.match(value.strip())):
            errors.append(error(field, "It should be in the 'valid email address' format"))
    if creating:
        if "requester_id" not in body and "email" not in body:
            fields = "requester_id, phone, email, twitter_id, facebook_id, unique_external_id"
            message = f"Please fill at least 1 of {fields} fields"
            errors.append(error("requester_id", message, "missing_field"))
        for field in ("subject", "description"):  # required for agents in default ticket fields
            if field not in body:
                errors.append(error(field, "It should be a/an String", "missing_field"))
    if errors:
        raise validation_failed(errors)
    if creating and "requester_id" not in out:
        out["requester_id"] = _contact_for(conn, body["email"].strip(), body.get("name"))
    return out


def _contact_for(conn: sqlite3.Connection, email: str, name: Any) -> int:
    found = conn.execute("SELECT id FROM contacts WHERE email = ?", (email,)).fetchone()
    if found is not None:
        return int(found["id"])
    contact_id, now = next_id(conn, "contact", 43000001001), utc_iso()
    label = name if isinstance(name, str) and name else email.split("@")[0]
    values = (contact_id, label, email, now, now)
    conn.execute(
        "INSERT INTO contacts (id, name, email, password_hash, active, created_at, updated_at) "
        "VALUES (?, ?, ?, NULL, 1, ?, ?)",
        values,
    )
    return contact_id


def validate_note(conn: sqlite3.Connection, body: Json, caller_id: int) -> tuple[str, bool, int]:
    """Validate ``POST /tickets/{id}/notes``: (HTML body, private, author agent id)."""
    errors: list[Json] = []
    allowed = {"body", "private", "incoming", "notify_emails", "user_id"}
    errors += [invalid_field(f) for f in body if f not in allowed]
    text, private, author = body.get("body"), body.get("private", True), body.get("user_id")
    if "body" not in body:
        errors.append(error("body", "It should be a/an String", "missing_field"))
    elif not isinstance(text, str):
        errors.append(mismatch("body", text, "String"))
    elif not plain_text(text):
        errors.append(error("body", "It should not be blank as this is a mandatory field"))
    for flag in ("private", "incoming"):
        if flag in body and not isinstance(body[flag], bool):
            errors.append(mismatch(flag, body[flag], "Boolean"))
    if author is not None and (problem := _reference(conn, "user_id", author, "agents", "agent")):
        errors.append(problem)
    if errors:
        raise validation_failed(errors)
    return as_html(str(text)), bool(private), int(author or caller_id)


# --------------------------------------------------------------------------- filter tickets

_QUERY_FORMAT = (
    "Given query is invalid, expected format \"keyword:value  OPERATOR keyword:'string' "
    "OPERATOR keyword:>'yyyy-mm-dd' OPERATOR keyword:<integer\". Space is mandatory between "
    "key/value pair and operator. Please check the paranthesis if there are any."
)
_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<op>AND|OR)(?=[\s(])|(?P<field>[A-Za-z_]\w*):"
    r"(?P<rel>[<>]?)(?:'(?P<str>[^']*)'|(?P<num>-?\d+)|(?P<word>null|true|false)))"
)
_NUMERIC = {"agent_id": "responder_id", "group_id": "group_id", "priority": "priority",
            "status": "status"}  # fmt: skip
_DATES = ("created_at", "updated_at", "due_by", "fr_due_by")


def parse_query(raw: str) -> Any:
    """``"a:1 AND (b:'x' OR c:null)"`` to ``("or", [("and", [("is", field, rel, value)…])…])``.

    AND binds tighter than OR; parentheses group.
    """
    if len(raw) > 512:
        message = f"Has {len(raw)} characters, it can have maximum of 512 characters"
        raise validation_failed([error("query", message)])
    bad = validation_failed([error("query", _QUERY_FORMAT)])
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        raise bad
    tokens, text, pos = [], raw[1:-1], 0
    while text[pos:].strip():
        if (match := _TOKEN.match(text, pos)) is None:
            raise bad
        tokens.append(match)
        pos = match.end()

    def disjunction(i: int) -> tuple[Any, int]:
        ors: list[Any] = []
        ands: list[Any] = []
        while True:
            token = tokens[i] if i < len(tokens) else None
            if token is not None and token["open"]:
                node, i = disjunction(i + 1)
                if i >= len(tokens) or not tokens[i]["close"]:
                    raise bad
            elif token is not None and token["field"]:
                node = _condition(token)
            else:
                raise bad
            ands.append(node)
            i += 1
            if i < len(tokens) and tokens[i]["op"]:
                if tokens[i]["op"] == "OR":
                    ors, ands = [*ors, ("and", ands)], []
                i += 1
                continue
            return ("or", [*ors, ("and", ands)]), i

    tree, end = disjunction(0)
    if end != len(tokens):
        raise bad
    return tree


def _condition(token: re.Match[str]) -> tuple[str, str, str, Any]:
    """One ``field:value`` of a query; unknown fields and wrongly typed values are refused."""
    field, rel, value = token["field"], token["rel"], token["str"]
    if token["num"] is not None:
        value = int(token["num"])
    elif token["word"] is not None:
        value = {"null": None, "true": True, "false": False}[token["word"]]
    if field not in {*_NUMERIC, *_DATES, "tag", "type", *CUSTOM_FIELDS}:
        raise validation_failed([invalid_field(field)])
    if field in _NUMERIC and not (value is None or isinstance(value, int)):
        raise validation_failed([error(field, "It should be a/an Integer", "datatype_mismatch")])
    if field in _DATES and not re.fullmatch(r"\d{4}-\d\d-\d\d", str(value)):
        raise validation_failed(
            [error(field, "It should be a valid date in the 'yyyy-mm-dd' format")]
        )
    if rel and field not in {*_NUMERIC, *_DATES}:
        raise validation_failed([error("query", _QUERY_FORMAT)])
    return ("is", field, rel, value)


def matches(node: Any, row: Mapping[str, Any]) -> bool:
    """Whether a ``tickets`` row satisfies a parsed query."""
    kind = node[0]
    if kind == "or":
        return any(matches(child, row) for child in node[1])
    if kind == "and":
        return all(matches(child, row) for child in node[1])
    _, field, rel, value = node
    if field == "tag":
        tags = [t.casefold() for t in json.loads(row["tags"])]
        return not tags if value is None else str(value).casefold() in tags
    if field in _NUMERIC:
        found = row[_NUMERIC[field]]
    elif field in _DATES:
        found = str(row[field])[:10]
    elif field == "type":
        found = row["type"]
    else:
        found = json.loads(row["custom_fields"]).get(field)
    if value is None or found is None:
        return value is None and found is None and not rel
    if rel:
        return bool(found >= value if rel == ">" else found <= value)
    if isinstance(found, str) and isinstance(value, str):
        return found.casefold() == value.casefold()
    return bool(found == value)
