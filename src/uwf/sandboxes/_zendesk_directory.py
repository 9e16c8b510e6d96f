"""Zendesk sandbox organizations and end users: schema, seed, JSON shapes and writes.

Organizations are companies (names unique, case-insensitively); users are people, whose
primary email and ``external_id`` are unique. ``create_or_update`` finds an organization by
``id`` or ``external_id`` (never by name) and a user by ``external_id`` or email, as Zendesk
documents. Like `_zendesk_records`, everything here runs inside one `SandboxStore` unit of
work and raises `ZendeskError` with Zendesk's own bodies.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._store import get_meta, next_id, set_meta
from uwf.sandboxes._zendesk_records import (
    GROUPS,
    SEED_EPOCH,
    Errors,
    ZendeskError,
    comment_json,
    not_found,
    record_invalid,
)

__all__ = [
    "DIRECTORY_SCHEMA",
    "ORGANIZATIONS",
    "Write",
    "organization_fields_json",
    "organization_json",
    "organization_row",
    "seed_directory",
    "upgrade",
    "user_fields_json",
    "write_organization",
    "write_user",
]

DIRECTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS organizations (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    external_id TEXT UNIQUE COLLATE NOCASE, details TEXT, notes TEXT,
    domain_names TEXT NOT NULL, group_id INTEGER, shared_tickets INTEGER NOT NULL,
    shared_comments INTEGER NOT NULL, tags TEXT NOT NULL, organization_fields TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
"""

# (id, name, external_id, domain, notes, tier): three customer companies.
ORGANIZATIONS = (
    (40001, "Globex Corporation", "crm-acct-0001", "globex.test", "Key account since 2019.",
     "enterprise"),
    (40002, "Initech", "crm-acct-0002", "initech.test", None, "premium"),
    (40003, "Umbrella Health", None, "umbrella.test", None, None),
)  # fmt: skip
# Seeded end users (ids from `END_USERS`) who belong to an organization, with a phone.
MEMBERS = {20001: (40001, "+1 555 0101"), 20002: (40001, None), 20003: (40002, "+1 555 0103")}

_TIERS = ("basic", "premium", "enterprise")
_ORG_FIELDS: tuple[tuple[int, str, str, str], ...] = (  # (id, key, type, title): custom ones
    (370001, "account_tier", "dropdown", "Account tier"),
    (370002, "renewal_date", "date", "Renewal date"),
)
_USER_FIELDS: tuple[tuple[int, str, str, str], ...] = (
    (380001, "customer_since", "date", "Customer since"),
    (380002, "vip", "checkbox", "VIP"),
)
_ROLES = ("end-user", "agent", "admin")


def seed_directory(conn: sqlite3.Connection) -> None:
    """The seeded organizations, and which seeded end users belong to them."""
    at = utc_iso(SEED_EPOCH)
    for org_id, name, external_id, domain, notes, tier in ORGANIZATIONS:
        custom = {"account_tier": tier, "renewal_date": None}
        conn.execute(
            "INSERT INTO organizations VALUES (?, ?, ?, NULL, ?, ?, NULL, 0, 0, '[]', ?, ?, ?)",
            (org_id, name, external_id, notes, json.dumps([domain]), json.dumps(custom), at, at),
        )
    for user_id, (org_id, phone) in MEMBERS.items():
        sql = "UPDATE users SET organization_id = ?, phone = ? WHERE id = ?"
        conn.execute(sql, (org_id, phone, user_id))
    # Zendesk lists every custom user field on every user, null until set.
    blank = json.dumps({key: None for _, key, _, _ in _USER_FIELDS})
    conn.execute("UPDATE users SET user_fields = ? WHERE user_fields = '{}'", (blank,))
    set_meta(conn, "directory_seeded", utc_iso())


def upgrade(conn: sqlite3.Connection) -> None:
    """A file seeded before organizations existed gains the users' new columns, the seeded
    organizations, and an audit for every comment that has none (``comment.lookup`` reads
    comments from audits). Runs once; a newer file was seeded with all of it."""
    if get_meta(conn, "directory_seeded") is not None:
        return
    columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
    added = (("phone", "TEXT"), ("organization_id", "INTEGER"),
             ("user_fields", "TEXT NOT NULL DEFAULT '{}'"))  # fmt: skip
    for column, declaration in added:
        if column not in columns:
            conn.execute(f"ALTER TABLE users ADD COLUMN {column} {declaration}")
    conn.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS users_by_external_id "
        "ON users (external_id COLLATE NOCASE)"
    )
    orphans = conn.execute(
        "SELECT * FROM comments WHERE audit_id NOT IN (SELECT id FROM audits) ORDER BY id"
    ).fetchall()
    for row in orphans:
        event = comment_json(row)
        values = (row["audit_id"], row["ticket_id"], row["author_id"], json.dumps([event]),
                  row["metadata"], row["created_at"])  # fmt: skip
        conn.execute("INSERT INTO audits VALUES (?, ?, ?, ?, ?, ?)", values)
    seed_directory(conn)


# --------------------------------------------------------------------------- JSON shapes


def organization_json(row: dict[str, Any], base: str) -> Json:
    """An ``organizations`` row as Zendesk returns it."""
    return {
        "url": f"{base}/api/v2/organizations/{row['id']}.json",
        **{k: row[k] for k in ("id", "name", "external_id", "details", "notes", "group_id")},
        "shared_tickets": bool(row["shared_tickets"]),
        "shared_comments": bool(row["shared_comments"]),
        "domain_names": json.loads(row["domain_names"]),
        "tags": json.loads(row["tags"]),
        "organization_fields": json.loads(row["organization_fields"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _field_json(
    base: str, kind: str, fid: int, key: str, ftype: str, title: str, system: bool
) -> Json:
    at = utc_iso(SEED_EPOCH)
    field: Json = {
        "url": f"{base}/api/v2/{kind}/{fid}.json", "id": fid, "type": ftype, "key": key,
        "title": title, "raw_title": title, "description": "", "raw_description": "",
        "position": fid % 100, "active": True, "system": system,
        "regexp_for_validation": None, "created_at": at, "updated_at": at,
    }  # fmt: skip
    if ftype == "dropdown":
        field["custom_field_options"] = [
            {"id": fid * 10 + n, "name": t.title(), "raw_name": t.title(), "value": t}
            for n, t in enumerate(_TIERS)
        ]
    if ftype == "checkbox":
        field["tag"] = None
    return field


def _fields_json(
    base: str,
    kind: str,
    first_id: int,
    system: tuple[tuple[str, str, str], ...],
    custom: Any,
) -> list[Json]:
    """The system fields (ids from `first_id`), then the custom ones, of `kind`."""
    fields = [
        _field_json(base, kind, first_id + n, key, ftype, title, True)
        for n, (key, ftype, title) in enumerate(system)
    ]
    return fields + [
        _field_json(base, kind, fid, key, ftype, title, False) for fid, key, ftype, title in custom
    ]


def organization_fields_json(base: str) -> list[Json]:
    """The account's organization fields: the system ones, then the custom ones."""
    system = (("name", "text", "Name"), ("details", "textarea", "Details"),
              ("notes", "textarea", "Notes"), ("domain_names", "text", "Domains"),
              ("group_id", "integer", "Group"), ("tags", "text", "Tags"))  # fmt: skip
    return _fields_json(base, "organization_fields", 369001, system, _ORG_FIELDS)


def user_fields_json(base: str) -> list[Json]:
    """The account's user fields: the system ones, then the custom ones."""
    system = (("name", "text", "Name"), ("email", "text", "Email"),
              ("phone", "text", "Phone"), ("organization_id", "integer", "Organization"),
              ("role", "text", "Role"), ("external_id", "text", "External ID"))  # fmt: skip
    return _fields_json(base, "user_fields", 379001, system, _USER_FIELDS)


# --------------------------------------------------------------------------- validation


def _error(errors: Errors, field: str, code: str, text: str) -> None:
    errors.setdefault(field, []).append({"description": text, "error": code})


def _optional_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _custom(value: Any, fields: tuple[tuple[int, str, str, str], ...]) -> dict[str, Any] | None:
    """``{key: value}`` of known custom fields; None when a value does not fit its type."""
    if not isinstance(value, dict):
        return None
    types = {key: ftype for _, key, ftype, _ in fields}
    checks: dict[str, Callable[[Any], bool]] = {
        "dropdown": lambda v: v is None or v in _TIERS,
        "date": lambda v: v is None or (isinstance(v, str) and len(v) == 10),
        "checkbox": lambda v: isinstance(v, bool),
    }
    out = {}
    for key, val in value.items():
        if key in types:  # unknown keys are ignored, as Zendesk does
            if not checks[types[key]](val):
                return None
            out[key] = val
    return out


def _merged(
    current: dict[str, Any] | None,
    column: str,
    changes: Json,
    fields: tuple[tuple[int, str, str, str], ...],
) -> str:
    """The stored custom-field values with the written ones merged in (Zendesk keeps the
    values a write leaves out)."""
    before = json.loads(current[column]) if current else {}
    return json.dumps({**before, **(_custom(changes[column], fields) or {})})


@dataclass(frozen=True, slots=True)
class Write:
    """The outcome of a create, update or create_or_update: the row and whether it is new."""

    row: dict[str, Any]
    created: bool


def _param(body: Json, name: str) -> Json:
    value = body.get(name)
    if not isinstance(value, dict):
        description = f"Parameter {name} is required"
        raise ZendeskError(400, {"error": "ParameterMissing", "description": description})
    return value


def _find(conn: sqlite3.Connection, table: str, column: str, value: Any) -> dict[str, Any] | None:
    sql = f"SELECT * FROM {table} WHERE {column} = ?"  # noqa: S608 - literals of this module
    row = conn.execute(sql, (value,)).fetchone()
    return dict(row) if row is not None else None


def _id_of(row: dict[str, Any] | None) -> int | None:
    return None if row is None else int(row["id"])


def _taken(
    conn: sqlite3.Connection, table: str, column: str, value: Any, own_id: int | None
) -> bool:
    found = _find(conn, table, column, value) if isinstance(value, str) else None
    return found is not None and found["id"] != own_id


def organization_row(conn: sqlite3.Connection, org_id: int) -> dict[str, Any]:
    """The ``organizations`` row of ``org_id``; `not_found` if there is none."""
    row = _find(conn, "organizations", "id", org_id)
    if row is None:
        raise not_found()
    return row


def _organization_changes(
    conn: sqlite3.Connection, data: Json, own_id: int | None, errors: Errors
) -> Json:
    checks: dict[str, Callable[[Any], bool]] = {
        "name": lambda v: isinstance(v, str),
        "external_id": _optional_text,
        "details": _optional_text,
        "notes": _optional_text,
        "domain_names": _text_list,
        "tags": _text_list,
        "group_id": lambda v: v is None or v in {g[0] for g in GROUPS},
        "shared_tickets": lambda v: isinstance(v, bool),
        "shared_comments": lambda v: isinstance(v, bool),
        "organization_fields": lambda v: _custom(v, _ORG_FIELDS) is not None,
    }
    out: Json = {}
    for field, value in data.items():
        if field not in checks:
            continue  # Zendesk ignores fields it does not know or that are read-only
        if not checks[field](value):
            label = field.replace("_", " ").capitalize()
            _error(errors, field, "InvalidValue", f"{label}: is invalid")
        else:
            out[field] = value
    name = out.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        errors.pop("name", None)
        _error(errors, "name", "BlankValue", "Name: cannot be blank")
    elif _taken(conn, "organizations", "name", name, own_id):
        _error(errors, "name", "DuplicateValue", f"Name: {name} has already been taken")
    external_id = out.get("external_id")
    if _taken(conn, "organizations", "external_id", external_id, own_id):
        text = f"External: {external_id} has already been taken"
        _error(errors, "external_id", "DuplicateValue", text)
    return out


def _store(conn: sqlite3.Connection, table: str, values: Json, own_id: int | None) -> int:
    """Insert (``own_id`` None) or update a row from column values; returns its id."""
    now = utc_iso()
    if own_id is None:
        row = {**values, "created_at": now, "updated_at": now}
        columns, marks = ", ".join(row), ", ".join("?" * len(row))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - our columns
        return int(conn.execute(sql, tuple(row.values())).lastrowid or 0)
    sets = ", ".join(f"{column} = ?" for column in values)
    sql = f"UPDATE {table} SET {sets}, updated_at = ? WHERE id = ?"  # noqa: S608 - our columns
    conn.execute(sql, (*values.values(), now, own_id))
    return own_id


def write_organization(
    conn: sqlite3.Connection, body: Json, mode: str, org_id: int | None = None
) -> Write:
    """Create (``mode`` create), update (update, ``org_id``) or create_or_update one."""
    data = _param(body, "organization")
    current = organization_row(conn, org_id) if org_id is not None else None
    if mode == "create_or_update":
        if data.get("id") is not None:
            current = organization_row(conn, data["id"])
        elif isinstance(data.get("external_id"), str):
            current = _find(conn, "organizations", "external_id", data["external_id"])
    errors: Errors = {}
    if current is None and "name" not in data:
        _error(errors, "name", "BlankValue", "Name: cannot be blank")
    changes = _organization_changes(conn, data, _id_of(current), errors)
    if errors:
        raise record_invalid(errors)
    values: Json = {}
    for field, value in changes.items():
        if field in ("domain_names", "tags"):
            value = json.dumps(list(dict.fromkeys(v.lower() for v in value)))
        elif field == "organization_fields":
            value = _merged(current, field, changes, _ORG_FIELDS)
        elif field in ("shared_tickets", "shared_comments"):
            value = int(value)
        values[field] = value
    if current is None:
        blank = {"organization_fields": json.dumps({key: None for _, key, _, _ in _ORG_FIELDS})}
        defaults = {"domain_names": "[]", "tags": "[]", "shared_tickets": 0, "shared_comments": 0}
        values = {"id": next_id(conn, "organization", 40101), **defaults, **blank, **values}
    new_id = _store(conn, "organizations", values, _id_of(current))
    return Write(organization_row(conn, new_id), current is None)


def _user_changes(
    conn: sqlite3.Connection, data: Json, current: dict[str, Any] | None, errors: Errors
) -> Json:
    own_id = _id_of(current)
    checks: dict[str, Callable[[Any], bool]] = {
        "name": lambda v: isinstance(v, str),
        "email": lambda v: isinstance(v, str) and "@" in v,
        "phone": _optional_text,
        "external_id": _optional_text,
        "role": lambda v: v in _ROLES,
        "organization_id": lambda v: v is None or _find(conn, "organizations", "id", v) is not None,
        "user_fields": lambda v: _custom(v, _USER_FIELDS) is not None,
    }
    out: Json = {}
    for field, value in data.items():
        if field not in checks or (field == "email" and current is not None):
            # Unknown and read-only fields are ignored; on an existing user Zendesk adds an
            # email as a secondary identity, which the sandbox does not keep.
            continue
        if not checks[field](value):
            label = {"organization_id": "Organization"}.get(field, field.capitalize())
            _error(errors, field, "InvalidValue", f"{label}: is invalid")
        else:
            out[field] = value
    if "name" in out and not str(out["name"]).strip():
        _error(errors, "name", "TooShort", "Name: is too short (minimum is 1 characters)")
    email = out.get("email")
    if _taken(conn, "users", "email", email, own_id):
        text = f"Email: {email} is already being used by another user"
        _error(errors, "email", "DuplicateValue", text)
    external_id = out.get("external_id")
    if _taken(conn, "users", "external_id", external_id, own_id):
        text = f"External: {external_id} has already been taken"
        _error(errors, "external_id", "DuplicateValue", text)
    return out


def write_user(
    conn: sqlite3.Connection, body: Json, mode: str, user_id: int | None = None
) -> Write:
    """Create, update (``user_id``) or create_or_update one user; returns the stored row."""
    data = _param(body, "user")
    current = _find(conn, "users", "id", user_id) if user_id is not None else None
    if user_id is not None and current is None:
        raise not_found()
    if mode == "create_or_update":
        for key in ("external_id", "email"):
            if current is None and isinstance(data.get(key), str):
                current = _find(conn, "users", key, data[key])
    errors: Errors = {}
    if current is None and not data.get("name"):
        _error(errors, "name", "TooShort", "Name: is too short (minimum is 1 characters)")
    changes = _user_changes(conn, data, current, errors)
    if errors:
        raise record_invalid(errors)
    values = {k: v for k, v in changes.items() if k != "user_fields"}
    if "user_fields" in changes:
        values["user_fields"] = _merged(current, "user_fields", changes, _USER_FIELDS)
    if current is None:
        blank = json.dumps({key: None for _, key, _, _ in _USER_FIELDS})
        defaults = {"role": "end-user", "active": 1, "user_fields": blank}
        values = {"id": next_id(conn, "user", 30001), **defaults, **values}
    new_id = _store(conn, "users", values, _id_of(current))
    row = _find(conn, "users", "id", new_id)
    assert row is not None
    return Write(row, current is None)
