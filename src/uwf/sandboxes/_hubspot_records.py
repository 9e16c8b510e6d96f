"""HubSpot sandbox records: schema, property definitions, associations, JSON shapes, validation.

HubSpot's CRM v3 treats every object type alike (`/crm/v3/objects/{type}`), so records of all
types share one table: an id and a JSON map of *string* property values, as HubSpot stores
them. Everything here runs inside one `SandboxStore` unit of work and knows nothing of HTTP;
helpers raise `HubSpotError` (HubSpot's own error body) for `hubspot` to send unchanged.
"""

from __future__ import annotations

import fnmatch
import json
import re
import secrets
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from uwf.sandboxes._common import Json
from uwf.sandboxes._store import next_id

__all__ = [
    "ASSOCIATION_TYPES",
    "CATEGORIES",
    "DEFAULTS",
    "PRIORITIES",
    "PROPERTIES",
    "SCHEMA",
    "SEED_EPOCH",
    "STAGES",
    "HubSpotError",
    "associate",
    "associated",
    "batch_envelope",
    "find",
    "hs_error",
    "invalid",
    "invalid_json",
    "iso_ms",
    "make_credentials",
    "not_found",
    "object_json",
    "object_type",
    "owner_json",
    "property_json",
    "save_object",
    "search",
    "upper_name",
    "validate_associations",
    "validate_properties",
]

PORTAL_ID = 24242424
REDIRECT_URI = "http://localhost:8080/oauth/hubspot/callback"
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
STAGES = (("1", "New"), ("2", "Waiting on contact"), ("3", "Waiting on us"), ("4", "Closed"))
CATEGORIES = ("PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST", "GENERAL_INQUIRY")
# Internal values of HubSpot's `industry` options (a subset of its ~150), with their labels.
INDUSTRIES = (("ACCOUNTING", "Accounting"), ("BANKING", "Banking"),
              ("COMPUTER_SOFTWARE", "Computer Software"), ("CONSTRUCTION", "Construction"),
              ("FINANCIAL_SERVICES", "Financial Services"),
              ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
              ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Information Technology and Services"),
              ("INSURANCE", "Insurance"),
              ("LOGISTICS_AND_SUPPLY_CHAIN", "Logistics and Supply Chain"),
              ("MANAGEMENT_CONSULTING", "Management Consulting"), ("RETAIL", "Retail"),
              ("TELECOMMUNICATIONS", "Telecommunications"), ("UTILITIES", "Utilities"))  # fmt: skip
LIFECYCLE_STAGES = (("subscriber", "Subscriber"), ("lead", "Lead"),
                    ("marketingqualifiedlead", "Marketing Qualified Lead"),
                    ("salesqualifiedlead", "Sales Qualified Lead"),
                    ("opportunity", "Opportunity"), ("customer", "Customer"),
                    ("evangelist", "Evangelist"), ("other", "Other"))  # fmt: skip
SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_ALIASES = {"tickets": "tickets", "ticket": "tickets", "0-5": "tickets",
            "notes": "notes", "note": "notes", "0-46": "notes",
            "companies": "companies", "company": "companies", "0-2": "companies",
            "contacts": "contacts", "contact": "contacts", "0-1": "contacts"}  # fmt: skip
_UPPER = {"tickets": "TICKET", "notes": "NOTE", "companies": "COMPANY", "contacts": "CONTACT"}
MAX_SEARCH_RESULTS = 10_000


@dataclass(frozen=True, slots=True)
class AssociationType:
    """A HUBSPOT_DEFINED association type: one direction of a link between two object types.

    ``name`` is how v3 answers (``associations.companies.results[].type``); ``label`` is what
    v4 shows (``Primary`` for a contact's primary company, else null). A labelled association
    always comes with the unlabelled one of the same pair, as in HubSpot.
    """

    type_id: int
    from_type: str
    to_type: str
    inverse: int
    name: str
    label: str | None = None


ASSOCIATION_TYPES: dict[int, AssociationType] = {t.type_id: t for t in (
    AssociationType(228, "notes", "tickets", 227, "note_to_ticket"),
    AssociationType(227, "tickets", "notes", 228, "ticket_to_note"),
    AssociationType(202, "notes", "contacts", 201, "note_to_contact"),
    AssociationType(201, "contacts", "notes", 202, "contact_to_note"),
    AssociationType(190, "notes", "companies", 189, "note_to_company"),
    AssociationType(189, "companies", "notes", 190, "company_to_note"),
    AssociationType(279, "contacts", "companies", 280, "contact_to_company_unlabeled"),
    AssociationType(280, "companies", "contacts", 279, "company_to_contact_unlabeled"),
    AssociationType(1, "contacts", "companies", 2, "contact_to_company", "Primary"),
    AssociationType(2, "companies", "contacts", 1, "company_to_contact", "Primary"),
    AssociationType(16, "tickets", "contacts", 15, "ticket_to_contact"),
    AssociationType(15, "contacts", "tickets", 16, "contact_to_ticket"),
    AssociationType(339, "tickets", "companies", 340, "ticket_to_company_unlabeled"),
    AssociationType(340, "companies", "tickets", 339, "company_to_ticket_unlabeled"),
)}  # fmt: skip
# The unlabelled type of each (from, to) pair: what an association without a label gets.
_UNLABELED = {
    (t.from_type, t.to_type): t.type_id for t in ASSOCIATION_TYPES.values() if t.label is None
}
PRIMARY_COMPANY = 1  # contact -> company, "Primary": mirrored by `associatedcompanyid`

SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, email TEXT NOT NULL COLLATE NOCASE,
    first_name TEXT, last_name TEXT, archived INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    type TEXT NOT NULL, id INTEGER NOT NULL, properties TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS objects_uwf_key ON objects (type, json_extract(properties, '$.uwf_key'));
CREATE TABLE IF NOT EXISTS associations (
    from_type TEXT NOT NULL, from_id INTEGER NOT NULL, to_type TEXT NOT NULL,
    to_id INTEGER NOT NULL, type_id INTEGER NOT NULL,
    PRIMARY KEY (from_type, from_id, to_type, to_id, type_id));
CREATE TABLE IF NOT EXISTS oauth_tokens (
    token TEXT PRIMARY KEY, grant_type TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_refresh_tokens (token TEXT PRIMARY KEY, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_codes (
    code TEXT PRIMARY KEY, redirect_uri TEXT NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL);
"""


class HubSpotError(Exception):
    """A response in HubSpot's format; the route layer adds the correlation id."""

    def __init__(self, status: int, body: Json, headers: Mapping[str, str] | None = None):
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, dict(headers or {})

    def with_headers(self, headers: Mapping[str, str]) -> HubSpotError:
        """The same error, sent with extra response headers."""
        self.headers.update(headers)
        return self


def hs_error(status: int, message: str, category: str | None = None, **extra: Any) -> HubSpotError:
    """HubSpot's standard error body: ``{status: "error", message, category?, …}``."""
    body: Json = {"status": "error", "message": message}
    if category is not None:
        body["category"] = category
    return HubSpotError(status, {**body, **extra})


def invalid(message: str, **extra: Any) -> HubSpotError:
    """HubSpot's 400 ``VALIDATION_ERROR``."""
    return hs_error(400, message, "VALIDATION_ERROR", **extra)


def not_found() -> HubSpotError:
    """404 for a record id that does not exist (wording per CRM-FACTS; category unverified)."""
    return hs_error(404, "resource not found", "OBJECT_NOT_FOUND")


# Codes whose per-property result HubSpot sends without `localizedErrorMessage`/`portalId`
# (real INVALID_EMAIL answers quoted in public code carry only these four keys).
_BARE_CODES = frozenset({"INVALID_EMAIL"})


def _property_errors(issues: list[tuple[str, str, str]]) -> HubSpotError:
    # HubSpot serialises the per-property results into the message string itself.
    details: list[Json] = []
    for name, code, text in issues:
        detail: Json = {"isValid": False, "message": text, "error": code, "name": name}
        if code not in _BARE_CODES:
            detail.update(localizedErrorMessage=text, portalId=PORTAL_ID)
        details.append(detail)
    text = "Property values were not valid: " + json.dumps(details, separators=(",", ":"))
    return invalid(text)


def upper_name(otype: str) -> str:
    """The singular upper-case name HubSpot's messages use: ``COMPANY``, ``TICKET``."""
    return _UPPER[otype]


def object_type(name: str) -> str:
    """The canonical object type of a path segment; HubSpot's 400 for an unknown one."""
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise invalid(f"Unable to infer object type from: {name}") from None


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True, slots=True)
class Prop:
    """One property definition, as `GET /crm/v3/properties/{type}` describes it."""

    name: str
    label: str
    type: str  # string, number, datetime, enumeration
    field_type: str  # text, textarea, html, select, checkbox, date, number
    group: str
    options: tuple[tuple[str, str], ...] = ()
    unique: bool = False
    read_only: bool = False
    custom: bool = False
    external_options: bool = False


def _common(group: str, created: str, modified: str = "hs_lastmodifieddate") -> list[Prop]:
    return [
        Prop(created, "Create date", "datetime", "date", group, read_only=True),
        Prop(modified, "Last modified date", "datetime", "date", group, read_only=True),
        Prop("hs_object_id", "Record ID", "number", "number", group, read_only=True),
        Prop("hubspot_owner_id", "Owner", "enumeration", "select", group, external_options=True),
        # The custom property UWF keys idempotent writes on; hasUniqueValue makes it usable
        # as `idProperty` and makes HubSpot refuse a second record with the same value.
        Prop("uwf_key", "UWF step key", "string", "text", group, unique=True, custom=True),
    ]  # fmt: skip


PROPERTIES: dict[str, dict[str, Prop]] = {
    "tickets": {p.name: p for p in (
        Prop("subject", "Ticket name", "string", "text", "ticketinformation"),
        Prop("content", "Ticket description", "string", "textarea", "ticketinformation"),
        Prop("hs_pipeline", "Pipeline", "enumeration", "select", "ticketinformation",
             (("0", "Support Pipeline"),)),
        Prop("hs_pipeline_stage", "Ticket status", "enumeration", "select", "ticketinformation",
             STAGES),
        Prop("hs_ticket_priority", "Priority", "enumeration", "select", "ticketinformation",
             tuple((p, p.title()) for p in PRIORITIES)),
        Prop("hs_ticket_category", "Category", "enumeration", "checkbox", "ticketinformation",
             tuple((c, c.replace("_", " ").title()) for c in CATEGORIES)),
        *_common("ticketinformation", "createdate"),
    )},
    "notes": {p.name: p for p in (
        Prop("hs_note_body", "Note body", "string", "html", "engagement"),
        Prop("hs_timestamp", "Activity date", "datetime", "date", "engagement"),
        *_common("engagement", "hs_createdate"),
    )},
    "companies": {p.name: p for p in (
        Prop("name", "Company name", "string", "text", "companyinformation"),
        Prop("domain", "Company Domain Name", "string", "text", "companyinformation"),
        Prop("website", "Website URL", "string", "text", "companyinformation"),
        Prop("phone", "Phone Number", "string", "phonenumber", "companyinformation"),
        Prop("industry", "Industry", "enumeration", "select", "companyinformation", INDUSTRIES),
        Prop("country", "Country/Region", "string", "text", "companyinformation"),
        Prop("city", "City", "string", "text", "companyinformation"),
        Prop("description", "Description", "string", "textarea", "companyinformation"),
        Prop("numberofemployees", "Number of Employees", "number", "number",
             "companyinformation"),
        Prop("annualrevenue", "Annual Revenue", "number", "number", "companyinformation"),
        *_common("companyinformation", "createdate"),
    )},
    "contacts": {p.name: p for p in (
        Prop("firstname", "First Name", "string", "text", "contactinformation"),
        Prop("lastname", "Last Name", "string", "text", "contactinformation"),
        Prop("email", "Email", "string", "text", "contactinformation"),
        Prop("phone", "Phone Number", "string", "phonenumber", "contactinformation"),
        Prop("mobilephone", "Mobile Phone Number", "string", "phonenumber",
             "contactinformation"),
        Prop("jobtitle", "Job Title", "string", "text", "contactinformation"),
        Prop("company", "Company Name", "string", "text", "contactinformation"),
        Prop("associatedcompanyid", "Primary Associated Company ID", "number", "number",
             "contactinformation"),
        Prop("lifecyclestage", "Lifecycle Stage", "enumeration", "radio",
             "contactinformation", LIFECYCLE_STAGES),
        Prop("country", "Country/Region", "string", "text", "contactinformation"),
        *_common("contactinformation", "createdate", "lastmodifieddate"),
    )},
}  # fmt: skip
_CREATED = {"tickets": "createdate", "notes": "hs_createdate", "companies": "createdate",
            "contacts": "createdate"}  # fmt: skip
# Contacts keep their own name for the modification time.
_MODIFIED = {"contacts": "lastmodifieddate"}
# What GET (and search) return without `properties` (HubSpot's documented defaults).
DEFAULTS = {
    "tickets": ("content", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline",
                "hs_pipeline_stage", "hs_ticket_category", "hs_ticket_priority", "subject"),
    "notes": ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                 "lastname"),
}  # fmt: skip
# Companies and contacts have no required property here: HubSpot advises a name or domain,
# and an email or a name (its newest guide says "required" for contacts, but documents no
# error for their absence), so an empty one is accepted.
_REQUIRED = {"tickets": ("subject", "hs_pipeline_stage"), "notes": ("hs_timestamp",),
             "companies": (), "contacts": ()}  # fmt: skip
_SEARCHABLE = {"tickets": ("subject", "content"), "notes": ("hs_note_body",),
               "companies": ("name", "domain", "website", "phone"),
               "contacts": ("firstname", "lastname", "email", "phone", "mobilephone",
                            "company")}  # fmt: skip
# Properties other than `hasUniqueValue` ones that name at most one record: a contact's email
# (HubSpot deduplicates contacts by it; it also works as `idProperty`), case-insensitively.
_NATURAL_KEYS = {"contacts": ("email",)}
_FIRST_ID = {"tickets": 2001, "notes": 9001, "companies": 6501, "contacts": 7501}


def property_json(prop: Prop) -> Json:
    """A property definition in HubSpot's shape, options included for enumerations."""
    at = iso_ms(SEED_EPOCH)
    options = [
        {"label": label, "value": value, "description": "", "displayOrder": n, "hidden": False}
        for n, (value, label) in enumerate(prop.options)
    ]
    body: Json = {
        "name": prop.name, "label": prop.label, "type": prop.type, "fieldType": prop.field_type,
        "description": "", "groupName": prop.group, "options": options, "displayOrder": -1,
        "calculated": False, "externalOptions": prop.external_options,
        "hasUniqueValue": prop.unique, "hidden": False, "formField": not prop.read_only,
        "modificationMetadata": {"archivable": prop.custom, "readOnlyDefinition": not prop.custom,
                                 "readOnlyValue": prop.read_only},
        "createdAt": at, "updatedAt": at, "archived": False,
    }  # fmt: skip
    if not prop.custom:  # HubSpot leaves the flag off custom properties
        body["hubspotDefined"] = True
    return body


# --------------------------------------------------------------------------- time


def iso_ms(ts: float | None = None) -> str:
    """HubSpot's timestamp format: ISO-8601 UTC with milliseconds, e.g. ``…T10:30:00.000Z``."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _epoch_ms(value: str) -> float | None:
    """A datetime value as Unix milliseconds: HubSpot takes ms or ISO-8601 alike."""
    if re.fullmatch(r"-?\d+", value):
        return float(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


# --------------------------------------------------------------------------- records


def make_credentials() -> dict[str, str]:
    """Fresh dev credentials for a new database: a private-app token and an OAuth app."""

    def uuid4() -> str:
        return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))

    return {
        "portal_id": str(PORTAL_ID),
        "private_app_token": f"pat-na1-{uuid4()}",
        "client_id": uuid4(),
        "client_secret": uuid4(),
        "refresh_token": f"na1-{secrets.token_hex(2)}-{uuid4()}",
        "redirect_uri": REDIRECT_URI,
        "auth": "bearer private_app_token, or OAuth POST /oauth/v1/token",
    }


def save_object(
    conn: sqlite3.Connection, otype: str, row: Mapping[str, Any] | None,
    changes: Mapping[str, str | None], *, at: float | None = None, object_id: int | None = None,
) -> int:  # fmt: skip
    """Create (``row`` None) or update a record with validated ``changes``; returns its id.

    New records take ids from ranges far from the seeded ones (tickets 2001+, notes 9001+,
    companies 6501+, contacts 7501+), so a test can tell them apart; the seed passes its own
    ``object_id`` and ``at``. A contact's ``associatedcompanyid`` is its primary company
    association, kept in step here.
    """
    now = iso_ms(at)
    modified = _MODIFIED.get(otype, "hs_lastmodifieddate")
    if row is None:
        missing = [n for n in _REQUIRED[otype] if not changes.get(n)]
        if missing:
            text = f"Error creating {_UPPER[otype]}.  Some required properties were not set."
            raise invalid(text, context={"properties": missing})
        if object_id is None:
            object_id = next_id(conn, otype, _FIRST_ID[otype])
        props = {"hs_pipeline": "0"} if otype == "tickets" else {}
        props.update({k: v for k, v in changes.items() if v is not None})
        props.update({_CREATED[otype]: now, modified: now, "hs_object_id": str(object_id)})
        values = (otype, object_id, json.dumps(props), now, now)
        conn.execute("INSERT INTO objects VALUES (?, ?, ?, ?, ?)", values)
    else:
        object_id = int(row["id"])
        merged: dict[str, str | None] = {**json.loads(row["properties"]), **changes}
        merged[modified] = now
        props = {k: v for k, v in merged.items() if v is not None}
        sql = "UPDATE objects SET properties = ?, updated_at = ? WHERE type = ? AND id = ?"
        conn.execute(sql, (json.dumps(props), now, otype, object_id))
    if otype == "contacts" and "associatedcompanyid" in changes:
        company = changes["associatedcompanyid"]
        _set_primary_company(conn, object_id, None if company is None else int(company))
    return object_id


def find(
    conn: sqlite3.Connection, otype: str, key: Any, id_property: str | None = None
) -> dict[str, Any] | None:
    """The record whose id (or unique ``id_property``) is ``key``, or None."""
    if id_property in (None, "hs_object_id"):
        text = str(key)
        if not text.isdigit() or len(text) > 18:
            return None
        found = conn.execute("SELECT * FROM objects WHERE type = ? AND id = ?", (otype, int(text)))
    else:
        prop = PROPERTIES[otype].get(str(id_property))
        natural = prop is not None and prop.name in _NATURAL_KEYS.get(otype, ())
        if prop is None or not (prop.unique or natural):
            text = f"{id_property} is not a unique identifier property for {_UPPER[otype]}"
            raise invalid(text)
        collate = " COLLATE NOCASE" if natural else ""
        where = f"json_extract(properties, '$.{prop.name}') = ?{collate}"
        sql = f"SELECT * FROM objects WHERE type = ? AND {where} ORDER BY id"  # noqa: S608 - our property name
        found = conn.execute(sql, (otype, str(key)))
    row = found.fetchone()
    return None if row is None else dict(row)


def object_json(
    row: Mapping[str, Any], otype: str, names: Iterable[str] | None = None,
    associations: Mapping[str, list[sqlite3.Row]] | None = None, extra: Json | None = None,
) -> Json:  # fmt: skip
    """A record as HubSpot returns it.

    ``names``: the properties asked for (unknown names are ignored, unset ones are null,
    as in HubSpot); None means every property that has a value (what writes return).
    """
    props = json.loads(row["properties"])
    if names is None:
        shown = dict(sorted(props.items()))
    else:
        shown = {n: props.get(n) for n in dict.fromkeys(names) if n in PROPERTIES[otype]}
    body: Json = {"id": str(row["id"]), "properties": shown, "createdAt": row["created_at"],
                  "updatedAt": row["updated_at"], "archived": False, **(extra or {})}  # fmt: skip
    if associations:  # one entry per association type, as v3 answers `?associations=`
        body["associations"] = {
            to: {"results": [
                {"id": str(r["to_id"]), "type": ASSOCIATION_TYPES[r["type_id"]].name} for r in rows
            ]}
            for to, rows in associations.items()
            if rows
        }  # fmt: skip
    return body


def owner_json(row: Mapping[str, Any]) -> Json:
    """An ``owners`` row as `GET /crm/v3/owners` returns it."""
    return {
        "id": str(row["id"]), "email": row["email"], "type": "PERSON",
        "firstName": row["first_name"], "lastName": row["last_name"], "userId": row["user_id"],
        "userIdIncludingInactive": row["user_id"], "createdAt": row["created_at"],
        "updatedAt": row["updated_at"], "archived": bool(row["archived"]),
        "teams": [{"id": "5001", "name": "Support", "primary": True}],
    }  # fmt: skip


def batch_envelope(results: list[Json], errors: list[Json], started: str) -> Json:
    """The body of every batch endpoint; `errors`/`numErrors` only when some inputs failed."""
    body: Json = {"status": "COMPLETE", "results": results, "startedAt": started,
                  "completedAt": iso_ms()}  # fmt: skip
    if errors:
        body.update(numErrors=len(errors), errors=errors)
    return body


# --------------------------------------------------------------------------- validation


def validate_properties(
    conn: sqlite3.Connection, otype: str, raw: Any, own_id: int | None = None
) -> dict[str, str | None]:
    """Check a ``properties`` map the way HubSpot does; returns values as stored strings.

    Values may be strings, numbers or booleans (HubSpot stores them as strings); null or ""
    clears a property. Every invalid property is reported in one 400, like HubSpot; a value
    another record already has for a unique property is a 409.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or any(isinstance(v, dict | list) for v in raw.values()):
        raise invalid_json("Cannot deserialize `properties`: expected a map of strings")
    issues: list[tuple[str, str, str]] = []
    out: dict[str, str | None] = {}
    for name, value in raw.items():
        prop = PROPERTIES[otype].get(name)
        if prop is None:
            issues.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            continue
        if prop.read_only:
            text = f'"{name}" is a read only property; its value cannot be set.'
            issues.append((name, "READ_ONLY_VALUE", text))
            continue
        text = (
            str(value).lower() if isinstance(value, bool) else ("" if value is None else str(value))
        )
        problem = _check_value(conn, prop, text) if text else None
        if problem is not None:
            issues.append((name, *problem))
        elif prop.type == "datetime" and text:
            out[name] = iso_ms((_epoch_ms(text) or 0) / 1000)
        else:
            out[name] = text or None
    if issues:
        raise _property_errors(issues)
    for prop in PROPERTIES[otype].values():
        value = out.get(prop.name)
        if (prop.unique or prop.name in _NATURAL_KEYS.get(otype, ())) and value is not None:
            existing = find(conn, otype, value, prop.name)
            if existing is not None and existing["id"] != own_id:
                label = _UPPER[otype].title()
                text = f"{label} already exists. Existing ID: {existing['id']}"
                raise hs_error(409, text, "CONFLICT")
    return out


def _check_value(conn: sqlite3.Connection, prop: Prop, text: str) -> tuple[str, str] | None:
    """The error code and message for an invalid value, or None."""
    if prop.name == "hubspot_owner_id":
        sql = "SELECT 1 FROM owners WHERE id = ? AND archived = 0"
        if not text.isdigit() or conn.execute(sql, (int(text[:18]),)).fetchone() is None:
            return "INVALID_OWNER_ID", f"{text} is not a valid owner id"
    elif prop.name == "associatedcompanyid":
        if find(conn, "companies", text) is None:
            return "INVALID_COMPANY_ID", f"{text} is not a valid company id"
    elif prop.name == "email" and not _EMAIL.fullmatch(text):
        return "INVALID_EMAIL", f"Email address {text} is invalid"
    elif prop.type == "number" and not _NUMBER.fullmatch(text):
        return "INVALID_DECIMAL", f"{text} was not a valid number"
    elif prop.type == "enumeration":
        allowed = [value for value, _ in prop.options]
        # Checkbox (multi-select) values are separated by semicolons.
        parts = text.split(";") if prop.field_type == "checkbox" else [text]
        bad = next((p for p in parts if p not in allowed), None)
        if bad is not None:
            return (
                "INVALID_OPTION",
                f"{bad} was not one of the allowed options: [{', '.join(allowed)}]",
            )
    elif prop.type == "datetime" and _epoch_ms(text) is None:
        return "INVALID_DATE", f"{text} is not a valid date or timestamp"
    return None


def invalid_json(detail: str) -> HubSpotError:
    """HubSpot's 400 for a body it cannot deserialize (this body carries no category)."""
    return hs_error(400, f"Invalid input JSON on line 1, column 1: {detail}")


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def validate_associations(
    conn: sqlite3.Connection, otype: str, raw: Any
) -> list[tuple[str, int, int]]:
    """The ``associations`` of a create body as ``[(to_type, to_id, type_id)]``, checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_json("Cannot deserialize `associations`: expected an array")
    found: list[tuple[str, int, int]] = []
    for item in raw:
        to = item.get("to") if isinstance(item, dict) else None
        types = item.get("types") if isinstance(item, dict) else None
        if not isinstance(to, dict) or not isinstance(types, list) or not types:
            raise invalid("Some required fields were not set: [to, types]")
        for spec in types:
            type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
            kind = ASSOCIATION_TYPES.get(type_id) if isinstance(type_id, int) else None
            if kind is None or kind.from_type != otype:
                text = f"{type_id} is not a valid association type id for {_UPPER[otype]}"
                raise invalid(text)
            target = find(conn, kind.to_type, to.get("id"))
            if target is None:
                text = (
                    f"{_UPPER[kind.to_type]} {to.get('id')} does not exist; association not created"
                )
                raise invalid(text)
            found.append((kind.to_type, int(target["id"]), kind.type_id))
    return found


def associate(
    conn: sqlite3.Connection, from_type: str, from_id: int, to_type: str, to_id: int,
    type_id: int | None = None,
) -> None:  # fmt: skip
    """Store an association both ways, each with its own HUBSPOT_DEFINED type id.

    Without ``type_id`` the pair's unlabelled type is used; a labelled type brings the
    unlabelled one along. A primary company replaces the contact's previous one and is
    mirrored in its ``associatedcompanyid``.
    """
    kinds = {_UNLABELED[(from_type, to_type)], type_id or _UNLABELED[(from_type, to_type)]}
    primary = PRIMARY_COMPANY in kinds or ASSOCIATION_TYPES[PRIMARY_COMPANY].inverse in kinds
    if primary:
        contact, company = (from_id, to_id) if from_type == "contacts" else (to_id, from_id)
        _drop_primary_company(conn, contact)
        row = find(conn, "contacts", contact) or {}
        props = {**json.loads(row.get("properties") or "{}"), "associatedcompanyid": str(company)}
        sql = "UPDATE objects SET properties = ? WHERE type = 'contacts' AND id = ?"
        conn.execute(sql, (json.dumps(props), contact))
    for kind in sorted(kinds):
        inverse = ASSOCIATION_TYPES[kind].inverse
        for values in (
            (from_type, from_id, to_type, to_id, kind),
            (to_type, to_id, from_type, from_id, inverse),
        ):
            conn.execute("INSERT OR IGNORE INTO associations VALUES (?, ?, ?, ?, ?)", values)


def _drop_primary_company(conn: sqlite3.Connection, contact_id: int) -> None:
    """Forget a contact's primary company link (the unlabelled association stays)."""
    inverse = ASSOCIATION_TYPES[PRIMARY_COMPANY].inverse
    sql = (
        "DELETE FROM associations WHERE (from_type = 'contacts' AND from_id = ? AND type_id = ?)"
        " OR (to_type = 'contacts' AND to_id = ? AND type_id = ?)"
    )
    conn.execute(sql, (contact_id, PRIMARY_COMPANY, contact_id, inverse))


def _set_primary_company(conn: sqlite3.Connection, contact_id: int, company: int | None) -> None:
    """Follow a write of ``associatedcompanyid``: associate the company as primary, or drop it."""
    if company is None:
        _drop_primary_company(conn, contact_id)
    else:
        associate(conn, "contacts", contact_id, "companies", company, PRIMARY_COMPANY)


def associated(
    conn: sqlite3.Connection, from_type: str, from_id: int, to_type: str
) -> list[sqlite3.Row]:
    """Associations of one record to one object type (one row per type), by target id."""
    sql = (
        "SELECT to_id, type_id FROM associations "
        "WHERE from_type = ? AND from_id = ? AND to_type = ? ORDER BY to_id, type_id"
    )
    return list(conn.execute(sql, (from_type, from_id, to_type)))


# --------------------------------------------------------------------------- search

_OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
                        "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
                        "NOT_CONTAINS_TOKEN"})  # fmt: skip


def _comparable(otype: str, name: str, value: Any) -> Any:
    prop = PROPERTIES[otype].get(name)
    text = "" if value is None else str(value)
    if prop is not None and prop.type in ("number", "datetime"):
        number = (
            _epoch_ms(text)
            if prop.type == "datetime"
            else (float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else None)
        )
        return number if number is not None else text.lower()
    return text.lower()  # string comparisons in search are case-insensitive


def _matches_association(linked: set[str], op: str, flt: Mapping[str, Any]) -> bool:
    """A filter on the pseudo-property ``associations.<type>``: the ids linked to a record."""
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return bool(linked) == (op == "HAS_PROPERTY")
    wanted = {str(v) for v in flt.get("values") or []} if op in ("IN", "NOT_IN") else set()
    if op in ("EQ", "NEQ"):
        wanted = {str(flt.get("value"))}
    if op not in ("EQ", "NEQ", "IN", "NOT_IN"):
        raise invalid(f"Invalid filter: {json.dumps(flt)}")
    return bool(linked & wanted) == (op in ("EQ", "IN"))


def _links(
    conn: sqlite3.Connection, otype: str, filters: list[Any]
) -> dict[str, dict[int, set[str]]]:
    """For each ``associations.<type>`` filter: record id -> the ids it is linked to."""
    links: dict[str, dict[int, set[str]]] = {}
    for flt in filters:
        name = str(flt.get("propertyName"))
        if not name.startswith("associations.") or name in links:
            continue
        to_type = object_type(name.removeprefix("associations."))
        sql = "SELECT from_id, to_id FROM associations WHERE from_type = ? AND to_type = ?"
        by_id: dict[int, set[str]] = {}
        for from_id, to_id in conn.execute(sql, (otype, to_type)):
            by_id.setdefault(from_id, set()).add(str(to_id))
        links[name] = by_id
    return links


def _matches(
    otype: str, props: Mapping[str, Any], flt: Mapping[str, Any],
    links: Mapping[int, set[str]] | None = None,
) -> bool:  # fmt: skip
    name, op = str(flt.get("propertyName")), str(flt.get("operator", "EQ"))
    if links is not None:
        return _matches_association(links.get(int(props["hs_object_id"]), set()), op, flt)
    actual = props.get(name)
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return (actual is not None) == (op == "HAS_PROPERTY")
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(flt.get("value", "")).lower()
        text = (actual or "").lower()
        words = [text, *re.findall(r"[\w@.*-]+", text)]
        hit = actual is not None and any(fnmatch.fnmatchcase(w, pattern) for w in words)
        return hit == (op == "CONTAINS_TOKEN")
    if op in ("IN", "NOT_IN"):
        values = [_comparable(otype, name, v) for v in flt.get("values") or []]
        return (actual is not None and _comparable(otype, name, actual) in values) == (op == "IN")
    if actual is None:
        return op == "NEQ"
    have, want = _comparable(otype, name, actual), _comparable(otype, name, flt.get("value"))
    if type(have) is not type(want):
        return op == "NEQ"
    if op == "BETWEEN":
        high = _comparable(otype, name, flt.get("highValue"))
        return type(high) is type(have) and bool(want <= have <= high)
    return bool({"EQ": have == want, "NEQ": have != want, "LT": have < want,
                 "LTE": have <= want, "GT": have > want, "GTE": have >= want}[op])  # fmt: skip


def search(
    conn: sqlite3.Connection, otype: str, body: Json, lag_seconds: float = 0
) -> tuple[list[dict[str, Any]], int, int | None]:
    """Run a CRM search request: (page of rows, total, next offset or None).

    `lag_seconds` emulates the search index trailing writes: a record created or changed that
    recently is not found yet.
    """
    groups = body.get("filterGroups") or []
    filters = [f for g in groups if isinstance(g, dict) for f in g.get("filters") or []]
    if len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups) or len(filters) > 18:
        text = "Too many filters: at most 5 filterGroups of 6 filters, 18 filters in all"
        raise invalid(text)
    bad = [
        f for f in filters if not isinstance(f, dict) or f.get("operator", "EQ") not in _OPERATORS
    ]
    if bad:
        raise invalid(f"Invalid filter: {json.dumps(bad[0])}")
    limit, after = body.get("limit", 10), body.get("after", "0")
    if not isinstance(limit, int) or not 0 < limit <= 200 or not str(after or 0).isdigit():
        raise invalid("limit must be 1–200 and after a number")
    offset = int(after or 0)
    if offset + limit > MAX_SEARCH_RESULTS:
        text = f"Search results are limited to {MAX_SEARCH_RESULTS}; narrow the filter instead"
        raise invalid(text)
    query = str(body.get("query") or "").lower()
    rows = [
        dict(r) for r in conn.execute("SELECT * FROM objects WHERE type = ? ORDER BY id", (otype,))
    ]
    if lag_seconds:
        cutoff = iso_ms(datetime.now(UTC).timestamp() - lag_seconds)
        rows = [r for r in rows if r["updated_at"] <= cutoff]
    links = _links(conn, otype, filters)
    hits = []
    for row in rows:
        props = json.loads(row["properties"])
        if groups and not any(
            all(_matches(otype, props, f, links.get(str(f.get("propertyName"))))
                for f in g.get("filters") or [])
            for g in groups if isinstance(g, dict)
        ):  # fmt: skip
            continue
        if query and not any(query in (props.get(n) or "").lower() for n in _SEARCHABLE[otype]):
            continue
        hits.append((row, props))
    sorts = body.get("sorts") or []
    if sorts:  # HubSpot honours one sort; strings may be "-createdate" for descending
        first = sorts[0]
        by_dict = isinstance(first, dict)
        name = str(first.get("propertyName") if by_dict else str(first).lstrip("-"))
        descending = first.get("direction") == "DESCENDING" if by_dict else str(first)[:1] == "-"

        def key(hit: tuple[dict[str, Any], Json]) -> tuple[int, float, str]:
            value = _comparable(otype, name, hit[1].get(name))
            return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))

        # Records without the property come last either way (unverified).
        present = sorted(
            (h for h in hits if h[1].get(name) is not None), key=key, reverse=descending
        )
        hits = present + [h for h in hits if h[1].get(name) is None]
    page = [row for row, _ in hits[offset : offset + limit]]
    more = offset + limit < len(hits)
    return page, len(hits), (offset + limit if more else None)
