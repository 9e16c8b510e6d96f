"""Freshdesk sandbox customers: companies and contacts (records, JSON shapes, validation).

Like `_freshdesk_records` this knows nothing of HTTP: helpers work on a `sqlite3.Connection`
inside one unit of work and raise `FreshdeskError` with Freshdesk's own bodies. What is
unique in Freshdesk is enforced as Freshdesk does it, at save time and with **409**
``duplicate_value`` ("It should be a unique value", Rails' "has already been taken" as
``api/lib/error_messages.yml`` renders it): a company's name (case-insensitively), a
contact's email and its ``unique_external_id``. A contact's 409 names the contact already
holding the value in ``additional_info.user_id``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._freshdesk_records import (
    MAX_STRING,
    FreshdeskError,
    error,
    invalid_field,
    mismatch,
    not_included,
    request_error,
    too_long,
    validation_failed,
)
from uwf.sandboxes._store import next_id

__all__ = [
    "COMPANIES",
    "COMPANY_CUSTOM_FIELDS",
    "CONTACT_COLUMNS",
    "CONTACT_CUSTOM_FIELDS",
    "CUSTOMERS_SCHEMA",
    "company_fields_json",
    "company_json",
    "company_row",
    "contact_fields_json",
    "contact_json",
    "contact_row",
    "insert_company",
    "insert_contact",
    "save_company",
    "save_contact",
    "seed_customers",
    "upgrade_contacts",
    "word_prefixes_match",
]

# Columns the contacts table gained with companies; `upgrade_contacts` adds them to a
# database made before (SQLite's ALTER TABLE ADD COLUMN; the UNIQUE rule lives in an index).
CONTACT_COLUMNS = {
    "phone": "TEXT", "mobile": "TEXT", "job_title": "TEXT", "company_id": "INTEGER",
    "unique_external_id": "TEXT", "twitter_id": "TEXT", "address": "TEXT",
    "description": "TEXT", "view_all_tickets": "INTEGER NOT NULL DEFAULT 0",
    "tags": "TEXT NOT NULL DEFAULT '[]'",
    "custom_fields": "TEXT NOT NULL DEFAULT '{}'",
}  # fmt: skip
CUSTOMERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS companies (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, description TEXT,
    note TEXT, domains TEXT NOT NULL, health_score TEXT, account_tier TEXT, renewal_date TEXT,
    industry TEXT, custom_fields TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
"""
_CONTACT_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS contacts_by_external_id ON contacts (unique_external_id)"
)

# The sandbox account's choices for the default dropdowns (an admin can edit them in
# Freshdesk; health score and account tier are Freshdesk's defaults) and its custom fields.
HEALTH_SCORES = ("At risk", "Doing okay", "Happy")
ACCOUNT_TIERS = ("Basic", "Premium", "Enterprise")
INDUSTRIES = ("Manufacturing", "Retail", "Software", "Finance", "Healthcare", "Other")
# name -> (id, type, label, choices); company and contact custom fields are named without
# the `cf_` prefix tickets use.
COMPANY_CUSTOM_FIELDS: dict[str, tuple[int, str, str, tuple[str, ...]]] = {
    "contract_number": (43000000511, "custom_text", "Contract number", ()),
    "region": (43000000512, "custom_dropdown", "Region", ("EMEA", "AMER", "APAC")),
}
CONTACT_CUSTOM_FIELDS: dict[str, tuple[int, str, str, tuple[str, ...]]] = {
    "department": (43000000611, "custom_text", "Department", ()),
}
# (id, name, description, domains, industry, account tier)
COMPANIES: tuple[tuple[int, str, str | None, list[str], str | None, str | None], ...] = (
    (43000000401, "Customer Inc.", "Employer of the seed requesters", ["customer.test"],
     "Retail", "Premium"),
    (43000000402, "Acme Corporation", "Anvils and rockets", ["acme-corp.test"],
     "Manufacturing", "Enterprise"),
    (43000000403, "Globex", None, [], None, None),
)  # fmt: skip
# Seed contact (by position in CONTACTS) -> (phone, mobile, job title, company id).
_CONTACT_DETAILS = {
    0: ("+1 415 555 0101", None, "Office manager", 43000000401),
    1: (None, "+1 415 555 0102", "Buyer", 43000000401),
    2: ("+44 20 7946 0103", None, "IT lead", 43000000402),
}
_SEED_AT = "2024-01-01T00:00:00Z"
_COMPANY_FIELDS = frozenset({
    "name", "description", "note", "domains", "health_score", "account_tier", "renewal_date",
    "industry", "custom_fields",
})  # fmt: skip
_CONTACT_FIELDS = frozenset({
    "name", "email", "phone", "mobile", "twitter_id", "unique_external_id", "job_title",
    "company_id", "description", "address", "tags", "custom_fields", "view_all_tickets",
})  # fmt: skip
# One of these identifies a contact (ContactValidation's mandatory fields, plus the
# unique_external_id of accounts with that feature).
_IDENTIFIERS = ("email", "mobile", "phone", "twitter_id", "unique_external_id")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_MAX_ID = 2**63 - 1


# --------------------------------------------------------------------------- schema and seed


def upgrade_contacts(conn: sqlite3.Connection) -> None:
    """Give a contacts table made before companies existed the columns it now has."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(contacts)")}
    for column, kind in CONTACT_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE contacts ADD COLUMN {column} {kind}")
    conn.execute(_CONTACT_INDEX)


def seed_customers(conn: sqlite3.Connection, contacts: tuple[tuple[int, str, str], ...]) -> None:
    """The seed companies, and phones, titles and companies for the first seed contacts."""
    for cid, name, description, domains, industry, tier in COMPANIES:
        fields = {"name": name, "description": description, "domains": domains,
                  "industry": industry, "account_tier": tier}  # fmt: skip
        insert_company(conn, fields, _SEED_AT, cid)
    for index, (phone, mobile, title, company) in _CONTACT_DETAILS.items():
        conn.execute(
            "UPDATE contacts SET phone = ?, mobile = ?, job_title = ?, company_id = ? WHERE id = ?",
            (phone, mobile, title, company, contacts[index][0]),
        )


# --------------------------------------------------------------------------- JSON shapes


def company_json(row: Mapping[str, Any]) -> Json:
    """A ``companies`` row as ``/companies`` returns it."""
    custom = json.loads(row["custom_fields"])
    return {
        "id": row["id"], "name": row["name"], "description": row["description"],
        "note": row["note"], "domains": json.loads(row["domains"]),
        "health_score": row["health_score"], "account_tier": row["account_tier"],
        "renewal_date": row["renewal_date"], "industry": row["industry"],
        "custom_fields": {name: custom.get(name) for name in COMPANY_CUSTOM_FIELDS},
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }  # fmt: skip


def contact_json(row: Mapping[str, Any]) -> Json:
    """A ``contacts`` row as ``/contacts`` returns it."""
    custom = json.loads(row["custom_fields"] or "{}")
    return {
        "active": bool(row["active"]), "address": row["address"],
        "company_id": row["company_id"], "description": row["description"],
        "email": row["email"], "id": row["id"], "job_title": row["job_title"],
        "language": "en", "mobile": row["mobile"], "name": row["name"], "phone": row["phone"],
        "time_zone": "UTC", "twitter_id": row["twitter_id"],
        "custom_fields": {name: custom.get(name) for name in CONTACT_CUSTOM_FIELDS},
        "facebook_id": None, "unique_external_id": row["unique_external_id"],
        "other_emails": [], "other_companies": [],
        "view_all_tickets": bool(row["view_all_tickets"]),
        "tags": json.loads(row["tags"] or "[]"),
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }  # fmt: skip


def _field(fid: int, name: str, label: str, kind: str, position: int, **extra: Any) -> Json:
    return {
        "id": fid, "name": name, "label": label, "position": position, "type": kind,
        "default": kind.startswith("default_"), "created_at": _SEED_AT,
        "updated_at": _SEED_AT, **extra,
    }  # fmt: skip


def company_fields_json() -> list[Json]:
    """``GET /company_fields``: default fields first, then custom ones (``required_for_agent``)."""
    default = (
        ("name", "Company Name", "default_name", ()),
        ("description", "Description", "default_description", ()),
        ("note", "Notes", "default_note", ()),
        ("domains", "Domains for this company", "default_domains", ()),
        ("health_score", "Health score", "default_health_score", HEALTH_SCORES),
        ("account_tier", "Account tier", "default_account_tier", ACCOUNT_TIERS),
        ("renewal_date", "Renewal date", "default_renewal_date", ()),
        ("industry", "Industry", "default_industry", INDUSTRIES),
    )
    fields = []
    for position, (name, label, kind, choices) in enumerate(default, start=1):
        extra: Json = {"choices": list(choices)} if choices else {}
        fid = 43000000501 + position - 1
        fields.append(
            _field(fid, name, label, kind, position, required_for_agent=name == "name", **extra)
        )
    for position, (name, (fid, kind, label, choices)) in enumerate(
        COMPANY_CUSTOM_FIELDS.items(), start=len(default) + 1
    ):
        extra = {"choices": list(choices)} if choices else {}
        fields.append(_field(fid, name, label, kind, position, required_for_agent=False, **extra))
    return fields


def contact_fields_json() -> list[Json]:
    """``GET /contact_fields``: the portal flags beside ``required_for_agents``."""
    default = (
        ("name", "Full Name", "default_name"),
        ("job_title", "Title", "default_job_title"),
        ("email", "Email", "default_email"),
        ("phone", "Work Phone", "default_phone"),
        ("mobile", "Mobile Phone", "default_mobile"),
        ("twitter_id", "Twitter", "default_twitter_id"),
        ("company_name", "Company", "default_company_name"),
        ("address", "Address", "default_address"),
        ("tag_names", "Tags", "default_tag_names"),
        ("description", "About", "default_description"),
    )
    rows = [(43000000601 + i, n, lbl, k) for i, (n, lbl, k) in enumerate(default)]
    rows += [(fid, n, lbl, k) for n, (fid, k, lbl, _) in CONTACT_CUSTOM_FIELDS.items()]
    return [
        _field(
            fid, name, label, kind, position,
            required_for_agents=name == "name", customers_can_edit=name != "company_name",
            label_for_customers=label, required_for_customers=False,
            displayed_for_customers=True, editable_in_signup=name in ("name", "email"),
        )
        for position, (fid, name, label, kind) in enumerate(rows, start=1)
    ]  # fmt: skip


# --------------------------------------------------------------------------- rows


def company_row(conn: sqlite3.Connection, company_id: int) -> dict[str, Any]:
    """The ``companies`` row of ``company_id``; Freshdesk's empty 404 if there is none."""
    row = conn.execute("SELECT * FROM companies WHERE id = ?", (min(company_id, _MAX_ID),))
    found = row.fetchone()
    if found is None:
        raise FreshdeskError(404, None)
    return dict(found)


def contact_row(conn: sqlite3.Connection, contact_id: int) -> dict[str, Any]:
    """The ``contacts`` row of ``contact_id``; Freshdesk's empty 404 if there is none."""
    row = conn.execute("SELECT * FROM contacts WHERE id = ?", (min(contact_id, _MAX_ID),))
    found = row.fetchone()
    if found is None:
        raise FreshdeskError(404, None)
    return dict(found)


def insert_company(
    conn: sqlite3.Connection, fields: Json, at: str, company_id: int | None = None
) -> int:
    """Store a company; returns its id (drawn from 43000001401 on unless given)."""
    row = {
        "id": company_id or next_id(conn, "company", 43000001401), "name": fields["name"],
        "description": fields.get("description"), "note": fields.get("note"),
        "domains": json.dumps(fields.get("domains") or []),
        "health_score": fields.get("health_score"), "account_tier": fields.get("account_tier"),
        "renewal_date": fields.get("renewal_date"), "industry": fields.get("industry"),
        "custom_fields": json.dumps(fields.get("custom_fields") or {}),
        "created_at": at, "updated_at": at,
    }  # fmt: skip
    sql = f"INSERT INTO companies VALUES ({', '.join(':' + k for k in row)})"  # noqa: S608 - our column names
    conn.execute(sql, row)
    return int(row["id"])


def insert_contact(conn: sqlite3.Connection, fields: Json, at: str) -> int:
    """Store a contact (active, as an agent-created contact is); returns its id."""
    row = {
        "id": next_id(conn, "contact", 43000001001), "password_hash": None, "active": 1,
        "created_at": at, "updated_at": at, **_stored(fields),
    }  # fmt: skip
    columns = ", ".join(row)
    sql = f"INSERT INTO contacts ({columns}) VALUES ({', '.join(':' + k for k in row)})"  # noqa: S608 - our column names
    conn.execute(sql, row)
    return int(row["id"])


def _stored(fields: Json) -> Json:
    """Validated fields as columns: lists and objects as JSON text."""
    return {k: json.dumps(v) if k in ("tags", "custom_fields", "domains") else v
            for k, v in fields.items()}  # fmt: skip


def _update(conn: sqlite3.Connection, table: str, record_id: int, changes: Json) -> None:
    changes = {**_stored(changes), "updated_at": utc_iso()}
    assignments = ", ".join(f"{f} = ?" for f in changes)
    sql = f"UPDATE {table} SET {assignments} WHERE id = ?"  # noqa: S608 - table is a literal, keys come from validation's fixed sets
    conn.execute(sql, (*changes.values(), record_id))


# --------------------------------------------------------------------------- validation


def _string(field: str, value: Any, errors: list[Json], *, nullable: bool = True) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        errors.append(mismatch(field, value, "String"))
    elif len(value) > MAX_STRING:
        errors.append(too_long(field, value, MAX_STRING))
    else:
        return value.strip()
    return None


def _custom(
    value: Any, known: Mapping[str, tuple[int, str, str, tuple[str, ...]]], errors: list[Json]
) -> Json:
    if not isinstance(value, dict):
        errors.append(mismatch("custom_fields", value, "key/value pair"))
        return {}
    out: Json = {}
    for name, item in value.items():
        if name not in known:
            errors.append(invalid_field(name))
            continue
        kind, choices = known[name][1], known[name][3]
        if item is not None and kind == "custom_dropdown" and item not in choices:
            errors.append(not_included(name, choices))
        elif item is not None and kind == "custom_text":
            out[name] = _string(name, item, errors)
        else:
            out[name] = item
    return out


def _require_changes(body: Json) -> None:
    if not body:
        message = "Your update call does not have any parameter. Atleast one parameter is required."
        raise request_error(400, "missing_params", message)


def _mandatory_name(value: Any, errors: list[Json], out: Json) -> None:
    """A company's or contact's `name`: a string that may not be null or blank."""
    name = _string("name", value, errors, nullable=False)
    if name == "":
        errors.append(error("name", "It should not be blank as this is a mandatory field"))
    elif name is not None:
        out["name"] = name


def validate_company(body: Json, *, creating: bool) -> Json:
    """A company create/update body as the columns to set, or 400 listing every error."""
    if not creating:
        _require_changes(body)
    errors: list[Json] = []
    out: Json = {}
    choices = {"health_score": HEALTH_SCORES, "account_tier": ACCOUNT_TIERS,
               "industry": INDUSTRIES}  # fmt: skip
    for field, value in body.items():
        if field not in _COMPANY_FIELDS:
            errors.append(invalid_field(field))
        elif field == "name":
            _mandatory_name(value, errors, out)
        elif field in ("description", "note"):
            out[field] = _string(field, value, errors)
        elif field == "domains":
            if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
                errors.append(mismatch(field, value, "Array"))
            else:
                out[field] = list(dict.fromkeys(d.strip().lower() for d in value if d.strip()))
        elif field in choices and value is not None and value not in choices[field]:
            errors.append(not_included(field, choices[field]))
        elif (
            field == "renewal_date"
            and value is not None
            and not (isinstance(value, str) and _DATE.match(value))
        ):
            errors.append(error(field, "It should be a valid date in the 'yyyy-mm-dd' format"))
        elif field == "custom_fields":
            out[field] = _custom(value, COMPANY_CUSTOM_FIELDS, errors)
        else:
            out[field] = value
    if creating and "name" not in body:
        errors.append(error("name", "It should be a/an String", "missing_field"))
    if errors:
        raise validation_failed(errors)
    return out


def validate_contact(conn: sqlite3.Connection, body: Json, *, creating: bool) -> Json:
    """A contact create/update body as the columns to set, or 400 listing every error."""
    if not creating:
        _require_changes(body)
    errors: list[Json] = []
    out: Json = {}
    for field, value in body.items():
        if field not in _CONTACT_FIELDS:
            errors.append(invalid_field(field))
        elif field == "name":
            _mandatory_name(value, errors, out)
        elif (
            field == "email"
            and value is not None
            and not (isinstance(value, str) and _EMAIL.match(value.strip()))
        ):
            errors.append(error(field, "It should be in the 'valid email address' format"))
        elif field == "email":
            out[field] = value and value.strip().lower()
        elif field == "company_id":
            if value is not None and not _is_id(value):
                errors.append(mismatch(field, value, "Positive Integer"))
            elif value is not None and not _company_exists(conn, value):
                errors.append(error(field, "There is no company matching the given company_id"))
            else:
                out[field] = value
        elif field == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                errors.append(mismatch(field, value, "Array"))
            else:
                out[field] = list(dict.fromkeys(t.strip() for t in value if t.strip()))
        elif field == "custom_fields":
            out[field] = _custom(value, CONTACT_CUSTOM_FIELDS, errors)
        elif field == "view_all_tickets":
            if not isinstance(value, bool):
                errors.append(mismatch(field, value, "Boolean"))
            else:
                out[field] = int(value)
        else:
            out[field] = _string(field, value, errors)
    if creating and body.get("view_all_tickets") is True and body.get("company_id") is None:
        message = "Company ID is required for a contact to view all tickets"
        errors.append(error("company_id", message, "missing_field"))
    if creating:
        if "name" not in body:
            errors.append(error("name", "It should be a/an String", "missing_field"))
        if not any(body.get(f) for f in _IDENTIFIERS):
            message = f"Please fill at least 1 of {', '.join(_IDENTIFIERS)} fields"
            errors.append(error("email", message, "missing_field"))
    if errors:
        raise validation_failed(errors)
    return out


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _company_exists(conn: sqlite3.Connection, company_id: int) -> bool:
    found = conn.execute("SELECT 1 FROM companies WHERE id = ?", (company_id,)).fetchone()
    return found is not None


def _duplicate(field: str, holder: int | None = None) -> FreshdeskError:
    """409 ``duplicate_value``; a contact's names the contact that has the value already."""
    entry: Json = {"field": field}
    if holder is not None:
        entry["additional_info"] = {"user_id": holder}
    entry |= {"message": "It should be a unique value", "code": "duplicate_value"}
    return FreshdeskError(409, {"description": "Validation failed", "errors": [entry]})


# --------------------------------------------------------------------------- saving


def save_company(conn: sqlite3.Connection, body: Json, company_id: int | None) -> dict[str, Any]:
    """Create (``company_id`` None) or update a company; returns the stored row.

    An update of an unknown company is a 404 before any validation, as in Freshdesk.
    """
    current = company_row(conn, company_id) if company_id is not None else None
    fields = validate_company(body, creating=current is None)
    if "name" in fields:
        same = conn.execute(
            "SELECT id FROM companies WHERE name = ? AND id IS NOT ?", (fields["name"], company_id)
        ).fetchone()
        if same is not None:
            raise _duplicate("name")
    if current is None:
        return company_row(conn, insert_company(conn, fields, utc_iso()))
    if "custom_fields" in fields:
        known = json.loads(current["custom_fields"])
        fields["custom_fields"] = {**known, **fields["custom_fields"]}
    _update(conn, "companies", current["id"], fields)
    return company_row(conn, current["id"])


def save_contact(conn: sqlite3.Connection, body: Json, contact_id: int | None) -> dict[str, Any]:
    """Create (``contact_id`` None) or update a contact; returns the stored row."""
    current = contact_row(conn, contact_id) if contact_id is not None else None
    fields = validate_contact(conn, body, creating=current is None)
    for field in ("email", "unique_external_id"):
        if fields.get(field) is None:
            continue
        # Emails compare without case (the column's collation); external ids exactly.
        sql = f"SELECT id FROM contacts WHERE {field} = ? AND id IS NOT ?"  # noqa: S608 - field is one of two literals
        holder = conn.execute(sql, (fields[field], contact_id)).fetchone()
        if holder is None and field == "email":  # agents are users too: their emails are taken
            holder = conn.execute(
                "SELECT id FROM agents WHERE email = ?", (fields[field],)
            ).fetchone()
        if holder is not None:
            raise _duplicate(field, int(holder["id"]))
    if current is None:
        return contact_row(conn, insert_contact(conn, fields, utc_iso()))
    if "custom_fields" in fields:
        known = json.loads(current["custom_fields"] or "{}")
        fields["custom_fields"] = {**known, **fields["custom_fields"]}
    _update(conn, "contacts", current["id"], fields)
    return contact_row(conn, current["id"])


# --------------------------------------------------------------------------- autocomplete


def word_prefixes_match(query: str, name: str) -> bool:
    """Freshdesk's company autocomplete: each word typed starts a word of the name.

    Case does not matter and substrings inside a word do not match: "acme" and "Co" find
    "Acme Corporation", "cme" and "orporation" do not.
    """
    words = name.casefold().split()
    typed = query.casefold().split()
    return bool(typed) and all(any(w.startswith(t) for w in words) for t in typed)
