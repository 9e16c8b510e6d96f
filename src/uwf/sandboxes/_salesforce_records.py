"""Salesforce sandbox records: ids, object schemas, seed data, JSON shapes, validation, SOQL.

Everything here works on a `sqlite3.Connection` inside one `SandboxStore` unit of work and
knows nothing of HTTP; `salesforce` holds the routes and OAuth. Records of every object live in
one table as JSON (``sobjects``), because Salesforce's own behaviour is driven by its describe
metadata: the field definitions below drive validation, describe, query and the JSON shapes
alike. Helpers raise `SalesforceError` (Salesforce's error array) so a route lets them propagate.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from uwf.sandboxes._common import Json
from uwf.sandboxes._store import get_meta, next_id

__all__ = [
    "ACCOUNTS",
    "API_VERSION",
    "CONTACTS",
    "INTEGRATION_USERNAME",
    "OBJECTS",
    "ORG_ID",
    "QUICKSTART_CASE_ID",
    "QUICKSTART_CASE_NUMBER",
    "SCHEMA",
    "USERS",
    "FieldDef",
    "Query",
    "SObjectDef",
    "SalesforceError",
    "attributes",
    "describe_json",
    "find_by_field",
    "insert_record",
    "load",
    "make_credentials",
    "no_such_column",
    "normalize_id",
    "not_found",
    "query_records",
    "record_json",
    "run_query",
    "seed",
    "sf_datetime",
    "sf_id",
    "sobject_info",
    "update_record",
    "validate_write",
]

API_VERSION = "59.0"
_SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

# --------------------------------------------------------------------------- ids


def _suffix(id15: str) -> str:
    """The 3-character suffix of an 18-character id: which letters of the 15 are upper case."""
    out = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        out += _SUFFIX[bits]
    return out


def sf_id(prefix: str, n: int) -> str:
    """A deterministic 18-character id: key prefix, a pod-like "5g0", base-62 number, suffix."""
    digits = ""
    while n:
        n, rest = divmod(n, 62)
        digits = _BASE62[rest] + digits
    id15 = f"{prefix}5g0{digits.rjust(9, '0')}"
    return id15 + _suffix(id15)


def normalize_id(value: Any, prefixes: Iterable[str] = ()) -> str | None:
    """The 18-character form of a 15- or 18-character id; None if malformed or of a wrong type."""
    if not isinstance(value, str) or len(value) not in (15, 18) or not value.isalnum():
        return None
    id15 = value[:15]
    if len(value) == 18 and value[15:].upper() != _suffix(id15):
        return None
    allowed = tuple(prefixes)
    return None if allowed and not id15.startswith(allowed) else id15 + _suffix(id15)


ORG_ID = sf_id("00D", 4242)
QUICKSTART_CASE_NUMBER = "00001123"
QUICKSTART_CASE_ID = sf_id("500", 123)
INTEGRATION_USERNAME = "integration@globex.sandbox"
# (n, first, last, username, email, active); ids are sf_id("005", n).
USERS = (
    (1, "UWF", "Integration", INTEGRATION_USERNAME, "integration@globex.test", True),
    (2, "Globex", "Admin", "admin@globex.sandbox", "admin@globex.test", True),
    (3, "Alice", "Agent", "alice@globex.sandbox", "alice@acme.test", True),
    (4, "Bob", "Agent", "bob@globex.sandbox", "bob@acme.test", True),
    (5, "Carol", "Agent", "carol@globex.sandbox", "carol@acme.test", True),
    (6, "Dave", "Departed", "dave@globex.sandbox", "dave.departed@globex.test", False),
)
_QUEUE_ID = sf_id("00G", 1)  # "Tier 1 Support", the default owner of new cases

# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field as Salesforce's describe reports it; `type` is the describe type name."""

    name: str
    label: str
    type: str
    length: int = 0
    create: bool = True
    update: bool = True
    nillable: bool = True
    values: tuple[str, ...] = ()
    default: Any = None
    restricted: bool = False
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    refs: tuple[str, ...] = ()
    relationship: str | None = None
    auto_number: bool = False


def _ro(name: str, label: str, kind: str, **extra: Any) -> FieldDef:
    return FieldDef(name, label, kind, create=False, update=False, **extra)


def _ref(name: str, label: str, refs: tuple[str, ...], rel: str, **extra: Any) -> FieldDef:
    return FieldDef(name, label, "reference", 18, refs=refs, relationship=rel, **extra)


def _system(*, owner: bool = True) -> tuple[FieldDef, ...]:
    user = ("User",)
    audit = (
        _ro("CreatedDate", "Created Date", "datetime"),
        _ro("CreatedById", "Created By ID", "reference", refs=user, relationship="CreatedBy"),
        _ro("LastModifiedDate", "Last Modified Date", "datetime"),
        _ro("LastModifiedById", "Last Modified By ID", "reference", refs=user,
            relationship="LastModifiedBy"),
        _ro("SystemModstamp", "System Modstamp", "datetime"),
    )  # fmt: skip
    return (_ref("OwnerId", "Owner ID", ("Group", "User"), "Owner"), *audit) if owner else audit


@dataclass(frozen=True)
class SObjectDef:
    """An sObject type: its describe basics and fields (looked up case-insensitively)."""

    name: str
    label: str
    plural: str
    prefix: str
    fields: tuple[FieldDef, ...]
    writable: bool = False
    by_name: dict[str, FieldDef] = field(init=False, repr=False)
    by_relationship: dict[str, FieldDef] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name.lower(): f for f in self.fields})
        rels = {f.relationship.lower(): f for f in self.fields if f.relationship}
        object.__setattr__(self, "by_relationship", rels)

    def field(self, name: str) -> FieldDef | None:
        return self.by_name.get(name.lower())


_PRIORITIES = ("High", "Medium", "Low")
_STATUSES = ("New", "Working", "Escalated", "Closed")
_ORIGINS = ("Phone", "Email", "Web")
_TYPES = ("Mechanical", "Electrical", "Electronic", "Structural", "Other")
_REASONS = ("Installation", "Equipment Complexity", "Performance", "Breakdown",
            "Equipment Design", "Feedback", "Other")  # fmt: skip
_PRODUCTS = ("GC1020", "GC1040", "GC1060", "GC3020", "GC3040", "GC3060", "GC5020", "GC5040")
_CASE = SObjectDef("Case", "Case", "Cases", "500", (
    _ro("Id", "Case ID", "id", length=18),
    _ro("IsDeleted", "Deleted", "boolean"),
    _ro("MasterRecordId", "Master Record ID", "reference", refs=("Case",),
        relationship="MasterRecord"),
    _ro("CaseNumber", "Case Number", "string", length=30, auto_number=True, id_lookup=True),
    _ref("ContactId", "Contact ID", ("Contact",), "Contact"),
    _ref("AccountId", "Account ID", ("Account",), "Account"),
    _ref("AssetId", "Asset ID", ("Asset",), "Asset"),
    _ref("ParentId", "Parent Case ID", ("Case",), "Parent"),
    FieldDef("SuppliedName", "Name", "string", 80),
    FieldDef("SuppliedEmail", "Email Address", "email", 80),
    FieldDef("SuppliedPhone", "Phone", "phone", 40),
    FieldDef("SuppliedCompany", "Company", "string", 80),
    FieldDef("Type", "Case Type", "picklist", 255, values=_TYPES),
    FieldDef("Status", "Status", "picklist", 255, nillable=False, values=_STATUSES,
             default="New", restricted=True),
    FieldDef("Reason", "Case Reason", "picklist", 255, values=_REASONS),
    FieldDef("Origin", "Case Origin", "picklist", 255, values=_ORIGINS, restricted=True),
    FieldDef("Subject", "Subject", "string", 255),
    FieldDef("Priority", "Priority", "picklist", 255, values=_PRIORITIES, default="Medium",
             restricted=True),
    FieldDef("Description", "Description", "textarea", 32000),
    _ro("IsClosed", "Closed", "boolean"),
    _ro("ClosedDate", "Closed Date", "datetime"),
    FieldDef("IsEscalated", "Escalated", "boolean", nillable=False, default=False),
    *_system(),
    _ro("ContactPhone", "Contact Phone", "phone", length=40),
    _ro("ContactMobile", "Contact Mobile", "phone", length=40),
    _ro("ContactEmail", "Contact Email", "email", length=80),
    _ro("ContactFax", "Contact Fax", "phone", length=40),
    FieldDef("Comments", "Internal Comments", "textarea", 4000),
    _ro("LastViewedDate", "Last Viewed Date", "datetime"),
    _ro("LastReferencedDate", "Last Referenced Date", "datetime"),
    FieldDef("EngineeringReqNumber__c", "Engineering Req Number", "string", 12),
    FieldDef("SLAViolation__c", "SLA Violation", "picklist", 255, values=("No", "Yes")),
    FieldDef("Product__c", "Product", "picklist", 255, values=_PRODUCTS),
    FieldDef("PotentialLiability__c", "Potential Liability", "picklist", 255,
             values=("No", "Yes")),
    FieldDef("UWF_Key__c", "UWF Key", "string", 255, external_id=True, id_lookup=True,
             unique=True),
    FieldDef("Legacy_Ref__c", "Legacy Reference", "string", 40, external_id=True,
             id_lookup=True),
    # A service-level team's own fields, the kind a tenant maps as custom fields.
    FieldDef("SL_Escalated__c", "Escalated (Service Level)", "boolean", nillable=False,
             default=False),
    FieldDef("SL_Severity__c", "Severity (Service Level)", "picklist", 255,
             values=("Sev1", "Sev2", "Sev3"), restricted=True),
), writable=True)  # fmt: skip
_COMMENT = SObjectDef("CaseComment", "Case Comment", "Case Comments", "00a", (
    _ro("Id", "Case Comment ID", "id", length=18),
    _ref("ParentId", "Parent Case ID", ("Case",), "Parent", update=False, nillable=False),
    FieldDef("IsPublished", "Published", "boolean", nillable=False, default=False),
    FieldDef("CommentBody", "Body", "textarea", 4000),
    *_system(owner=False),
    _ro("IsDeleted", "Deleted", "boolean"),
), writable=True)  # fmt: skip
_USER = SObjectDef("User", "User", "Users", "005", (
    _ro("Id", "User ID", "id", length=18),
    _ro("Username", "Username", "string", length=80, id_lookup=True, unique=True),
    _ro("LastName", "Last Name", "string", length=80),
    _ro("FirstName", "First Name", "string", length=40),
    _ro("Name", "Full Name", "string", length=121),
    _ro("CompanyName", "Company Name", "string", length=80),
    _ro("Title", "Title", "string", length=80),
    _ro("Email", "Email", "email", length=128, id_lookup=True),
    _ro("Alias", "Alias", "string", length=8),
    _ro("IsActive", "Active", "boolean"),
    _ro("TimeZoneSidKey", "Time Zone", "picklist", length=40),
    _ro("LocaleSidKey", "Locale", "picklist", length=40),
    _ro("EmailEncodingKey", "Email Encoding", "picklist", length=40),
    _ro("LanguageLocaleKey", "Language", "picklist", length=40),
    _ro("UserType", "User Type", "picklist", length=40),
    _ro("FederationIdentifier", "SAML Federation ID", "string", length=512, id_lookup=True),
    *_system(owner=False),
), writable=False)  # fmt: skip
_GROUP = SObjectDef("Group", "Group", "Groups", "00G", (
    _ro("Id", "Group ID", "id", length=18),
    _ro("Name", "Name", "string", length=40),
    _ro("DeveloperName", "Developer Name", "string", length=80),
    _ro("Type", "Type", "picklist", length=40),
    _ro("Email", "Email", "email", length=255),
    *_system(owner=False),
), writable=False)  # fmt: skip
_INDUSTRIES = ("Manufacturing", "Technology", "Retail", "Finance", "Energy")
_ACCOUNT = SObjectDef("Account", "Account", "Accounts", "001", (
    _ro("Id", "Account ID", "id", length=18),
    _ro("IsDeleted", "Deleted", "boolean"),
    FieldDef("Name", "Account Name", "string", 255, nillable=False, id_lookup=False),
    FieldDef("AccountNumber", "Account Number", "string", 40),
    FieldDef("Phone", "Account Phone", "phone", 40),
    FieldDef("Website", "Website", "url", 255),
    FieldDef("Industry", "Industry", "picklist", 255, values=_INDUSTRIES),
    FieldDef("BillingCountry", "Billing Country", "string", 80),
    FieldDef("Description", "Account Description", "textarea", 32000),
    *_system(),
    FieldDef("UWF_Key__c", "UWF Key", "string", 255, external_id=True, id_lookup=True,
             unique=True),
), writable=True)  # fmt: skip
_CONTACT = SObjectDef("Contact", "Contact", "Contacts", "003", (
    _ro("Id", "Contact ID", "id", length=18),
    _ro("IsDeleted", "Deleted", "boolean"),
    _ref("AccountId", "Account ID", ("Account",), "Account"),
    FieldDef("FirstName", "First Name", "string", 40),
    FieldDef("LastName", "Last Name", "string", 80, nillable=False),
    _ro("Name", "Full Name", "string", length=121),
    FieldDef("Email", "Email", "email", 80, id_lookup=True),
    FieldDef("Phone", "Business Phone", "phone", 40),
    FieldDef("MobilePhone", "Mobile Phone", "phone", 40),
    FieldDef("Title", "Title", "string", 128),
    *_system(),
    FieldDef("UWF_Key__c", "UWF Key", "string", 255, external_id=True, id_lookup=True,
             unique=True),
), writable=True)  # fmt: skip
OBJECTS: dict[str, SObjectDef] = {
    o.name.lower(): o for o in (_CASE, _COMMENT, _USER, _GROUP, _ACCOUNT, _CONTACT)
}
_BY_PREFIX = {o.prefix: o for o in OBJECTS.values()}
_PREFIXES = {"Asset": "02i"}
_PREFIXES.update({o.name: o.prefix for o in OBJECTS.values()})

SCHEMA = """
CREATE TABLE IF NOT EXISTS sobjects (id TEXT PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sobjects_by_type ON sobjects (type);
CREATE TABLE IF NOT EXISTS query_cursors (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, fields TEXT NOT NULL, ids TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, user_id TEXT NOT NULL, parent TEXT,
    issued_at REAL NOT NULL, expires_at REAL, revoked INTEGER NOT NULL DEFAULT 0);
"""

# --------------------------------------------------------------------------- errors


class SalesforceError(Exception):
    """A response in Salesforce's format: always a JSON array of ``{message, errorCode}``."""

    def __init__(
        self, status: int, code: str, message: str, fields: Sequence[str] | None = None
    ) -> None:
        super().__init__(status, code, message)
        entry: Json = {"message": message, "errorCode": code}
        if fields is not None:
            entry["fields"] = list(fields)
        self.status, self.body = status, [entry]


def not_found() -> SalesforceError:
    """404 for a record, object or path that does not exist."""
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


def no_such_column(name: str, entity: str) -> str:
    """INVALID_FIELD's message for a field the object does not have."""
    return (
        f"No such column '{name}' on entity '{entity}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names."
    )


# --------------------------------------------------------------------------- JSON shapes


def sf_datetime(ts: float) -> str:
    """Salesforce's datetime format: ``2024-01-01T00:00:00.000+0000``."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def attributes(obj: SObjectDef, record_id: str) -> Json:
    """The ``attributes`` every record carries: its type and its REST URL."""
    url = f"/services/data/v{API_VERSION}/sobjects/{obj.name}/{record_id}"
    return {"type": obj.name, "url": url}


def record_json(obj: SObjectDef, data: Mapping[str, Any], only: Iterable[str] = ()) -> Json:
    """A record as the REST API returns it: ``attributes`` first, then fields in schema order."""
    picked = [f.name for name in only if (f := obj.field(name))]
    names = picked or [f.name for f in obj.fields]
    return {"attributes": attributes(obj, data["Id"]), **{n: data.get(n) for n in names}}


_SOAP = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean",
         "datetime": "xsd:dateTime"}  # fmt: skip
_SYSTEM_FIELDS = {"Id", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById",
                  "SystemModstamp", "OwnerId", "IsDeleted"}  # fmt: skip


def _field_json(f: FieldDef) -> Json:
    picklist = [{"active": True, "defaultValue": v == f.default, "label": v, "validFor": None,
                 "value": v} for v in f.values]  # fmt: skip
    long_text = f.type == "textarea" and f.length > 255
    return {
        "aggregatable": not long_text, "autoNumber": f.auto_number, "byteLength": f.length * 3,
        "calculated": False, "caseSensitive": False, "createable": f.create,
        "custom": f.name.endswith("__c"), "defaultValue": f.default,
        "defaultedOnCreate": f.name in _SYSTEM_FIELDS or f.default is not None or f.auto_number,
        "externalId": f.external_id, "filterable": not long_text, "groupable": not long_text,
        "idLookup": f.id_lookup or f.type == "id", "label": f.label, "length": f.length,
        "name": f.name, "nameField": f.name in ("CaseNumber", "Name") and f.type != "reference",
        "nillable": f.nillable and f.type != "boolean", "picklistValues": picklist,
        "referenceTo": list(f.refs), "relationshipName": f.relationship,
        "restrictedPicklist": f.restricted, "soapType": _SOAP.get(f.type, "xsd:string"),
        "sortable": not long_text, "type": f.type, "unique": f.unique, "updateable": f.update,
        "precision": 0, "scale": 0, "digits": 0,
    }  # fmt: skip


def sobject_info(obj: SObjectDef) -> Json:
    """The object-level describe attributes (global describe, ``/sobjects/{name}``)."""
    base = f"/services/data/v{API_VERSION}/sobjects/{obj.name}"
    urls = {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}
    return {
        "activateable": False, "createable": obj.writable, "custom": False,
        "customSetting": False, "deletable": obj.writable, "deprecatedAndHidden": False,
        "feedEnabled": obj.name == "Case", "keyPrefix": obj.prefix, "label": obj.label,
        "labelPlural": obj.plural, "layoutable": True, "mergeable": obj.name == "Case",
        "mruEnabled": True, "name": obj.name, "queryable": True, "replicateable": True,
        "retrieveable": True, "searchable": True, "triggerable": True, "undeletable": True,
        "updateable": obj.writable, "urls": urls,
    }  # fmt: skip


def describe_json(obj: SObjectDef) -> Json:
    """``GET /sobjects/{name}/describe``: the object plus every field with its picklist values."""
    name_field = next((f.name for f in obj.fields if f.name in ("CaseNumber", "Name")), "Id")
    return {**sobject_info(obj), "fields": [_field_json(f) for f in obj.fields],
            "childRelationships": [], "recordTypeInfos": [], "nameField": name_field}  # fmt: skip


# --------------------------------------------------------------------------- records


def load(conn: sqlite3.Connection, record_id: str) -> tuple[SObjectDef, Json] | None:
    """The record with an 18-character ``record_id``, with its type."""
    row = conn.execute("SELECT type, data FROM sobjects WHERE id = ?", (record_id,)).fetchone()
    return None if row is None else (OBJECTS[row["type"].lower()], json.loads(row["data"]))


def find_by_field(conn: sqlite3.Connection, obj: SObjectDef, name: str, value: str) -> list[str]:
    """Ids of ``obj`` records whose ``name`` equals ``value`` (case-insensitive, as Salesforce)."""
    sql = "SELECT id FROM sobjects WHERE type = ? AND json_extract(data, ?) = ? COLLATE NOCASE"
    return [r["id"] for r in conn.execute(sql, (obj.name, f"$.{name}", value))]


def _save(conn: sqlite3.Connection, obj: SObjectDef, data: Json) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO sobjects (id, type, data) VALUES (?, ?, ?)",
        (data["Id"], obj.name, json.dumps(data)),
    )


def _derive(obj: SObjectDef, data: Json, now: float) -> None:
    """Fields Salesforce computes from others: a Closed status closes the case; Name."""
    if obj.name == "Contact":
        data["Name"] = " ".join(p for p in (data.get("FirstName"), data.get("LastName")) if p)
    if obj.name == "Case":
        closed = data.get("Status") == "Closed"
        data["ClosedDate"] = (data.get("ClosedDate") or sf_datetime(now)) if closed else None
        data["IsClosed"] = closed


def insert_record(
    conn: sqlite3.Connection, obj: SObjectDef, values: Json, user_id: str, now: float
) -> str:
    """Store a new record with defaults and system fields; returns its Id."""
    n = next_id(conn, obj.name, 100001)
    stamp = sf_datetime(now)
    data: Json = {f.name: False if f.type == "boolean" else f.default for f in obj.fields}
    data.update(Id=sf_id(obj.prefix, n), CreatedDate=stamp, CreatedById=user_id,
                LastModifiedDate=stamp, LastModifiedById=user_id, SystemModstamp=stamp)  # fmt: skip
    if obj.field("OwnerId"):
        data["OwnerId"] = user_id  # with no assignment rule, the creator owns the record
    if obj.name == "Case":
        data["CaseNumber"] = f"{next_id(conn, 'CaseNumber', 1251):08d}"
    data.update(values)
    _derive(obj, data, now)
    _save(conn, obj, data)
    return str(data["Id"])


def update_record(
    conn: sqlite3.Connection, obj: SObjectDef, data: Json, values: Json, user_id: str, now: float
) -> None:
    """Apply validated ``values`` to the stored ``data`` of a record."""
    data.update(values)
    stamp = sf_datetime(now)
    data.update(LastModifiedDate=stamp, LastModifiedById=user_id, SystemModstamp=stamp)
    _derive(obj, data, now)
    _save(conn, obj, data)


# --------------------------------------------------------------------------- validation

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def validate_write(
    conn: sqlite3.Connection, obj: SObjectDef, body: Json, *, creating: bool
) -> Json:
    """Check a create/update body field by field; returns the values to store."""
    out: Json = {}
    errors: list[SalesforceError] = []
    for key, value in body.items():
        if key == "attributes":
            continue
        # A relationship name with an object relates by external id: Parent: {CaseNumber: …}.
        rel = obj.by_relationship.get(key.lower()) if isinstance(value, dict) else None
        f = obj.field(key) or rel
        if f is None:
            message = f"No such column '{key}' on sobject of type {obj.name}"
            raise SalesforceError(400, "INVALID_FIELD", message)
        if not (f.create if creating else f.update):
            message = (
                f"Unable to create/update fields: {f.name}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or permission set."
            )
            raise SalesforceError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", message, [f.name])
        try:
            out[f.name] = _by_foreign_key(conn, f, value) if rel else _coerce(conn, f, value)
        except SalesforceError as exc:
            errors.append(exc)
    if creating:
        missing = [f.name for f in obj.fields if f.create and not f.nillable
                   and f.default is None and f.type != "boolean" and f.name not in out]  # fmt: skip
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            errors.append(SalesforceError(400, "REQUIRED_FIELD_MISSING", message, missing))
    if errors:
        first = errors[0]
        first.body = [entry for error in errors for entry in error.body]
        raise first
    return out


def _coerce(conn: sqlite3.Connection, f: FieldDef, value: Any) -> Any:
    if value is None:
        if not f.nillable:
            message = f"Required fields are missing: [{f.name}]"
            raise SalesforceError(400, "REQUIRED_FIELD_MISSING", message, [f.name])
        return None
    if f.type == "boolean" or isinstance(value, dict | list):
        if isinstance(value, bool) and f.type == "boolean":
            return value
        message = (
            f"Cannot deserialize instance of {f.type} from {type(value).__name__} value "
            f"{json.dumps(value)[:40]} or request may be missing a required field"
        )
        raise SalesforceError(400, "JSON_PARSER_ERROR", message)
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    if f.type == "reference":
        return _reference(conn, f, text)
    if len(text) > f.length:
        message = f"{f.label}: data value too large: {text[:40]} (max length={f.length})"
        raise SalesforceError(400, "STRING_TOO_LONG", message, [f.name])
    if f.type == "email" and not _EMAIL.match(text):
        message = f"{f.label}: invalid email address: {text}"
        raise SalesforceError(400, "INVALID_EMAIL_ADDRESS", message, [f.name])
    if f.restricted and text not in f.values:
        message = f"{f.label}: bad value for restricted picklist field: {text}"
        raise SalesforceError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", message, [f.name])
    return text


def _reference(conn: sqlite3.Connection, f: FieldDef, text: str) -> str:
    ref = normalize_id(text, [_PREFIXES[r] for r in f.refs])
    if ref is None:
        message = f"{f.label}: id value of incorrect type: {text}"
        raise SalesforceError(400, "MALFORMED_ID", message, [f.name])
    if ref[:3] not in _BY_PREFIX:
        return ref  # Assets are not emulated: any well-formed id is taken
    found = load(conn, ref)
    if found is None:
        raise SalesforceError(
            400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name]
        )
    if found[0].name == "User" and not found[1]["IsActive"]:
        raise SalesforceError(400, "INACTIVE_OWNER_OR_USER", "owner or user is inactive")
    return ref


def _by_foreign_key(conn: sqlite3.Connection, rel: FieldDef, value: Json) -> str:
    """Resolve ``{"CaseNumber": "00001123"}`` (an external-id/idLookup field) to an Id."""
    target = OBJECTS.get(rel.refs[0].lower())
    (name, key), *more = value.items() or [("", "")]
    f = target.field(name) if target else None
    if target is None or f is None or more or not (f.external_id or f.id_lookup):
        message = f"Provided external ID field does not exist or is not accessible: {name}"
        raise SalesforceError(400, "INVALID_FIELD", message)
    ids = find_by_field(conn, target, f.name, str(key))
    if len(ids) != 1:
        message = (
            f"Foreign key external ID: {key} not found for field {f.name} in entity {target.name}"
            if not ids
            else f"Foreign key external ID: {key} matches multiple rows in entity {target.name}"
        )
        raise SalesforceError(400, "INVALID_FIELD", message)
    return ids[0]


# --------------------------------------------------------------------------- seed and credentials


def make_credentials() -> dict[str, str]:
    """Fresh dev credentials: a connected app (consumer key/secret, certificate) and its tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uwf-sandbox-connected-app")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    def alnum(n: int) -> str:
        return "".join(secrets.choice(_BASE62) for _ in range(n))

    return {
        "org_id": ORG_ID,
        "user_id": sf_id("005", 1),
        "username": INTEGRATION_USERNAME,
        "password": alnum(16),
        "security_token": alnum(24),
        "client_id": "3MVG9" + alnum(80),
        "client_secret": alnum(64),
        "refresh_token": "5Aep861" + alnum(80),
        "access_token": f"{ORG_ID[:15]}!AQ" + alnum(100),
        "private_key_pem": pem.decode(),
        "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "api_version": API_VERSION,
        "auth": "Authorization: Bearer <access_token>; OAuth 2.0 at /services/oauth2/token",
    }


_TOPICS = ("Generator will not start", "Noise from the GC3040 unit", "Installation question",
           "Invoice does not match the order", "Replacement part request",
           "Performance below specification", "Feedback on the new controller")  # fmt: skip


# Customer accounts and their contacts (Account 1 is Initech, whose people write in).
ACCOUNTS = (("Initech", "United States"), ("Umbrella Corporation", "United Kingdom"),
            ("Hooli", "United States"), ("Vandelay Industries", "United States"),
            ("Soylent Corp", "Germany"))  # fmt: skip
CONTACTS = (("Peter", "Gibbons", "peter@initech.test", 1),
            ("Samir", "Nagheenanajar", "samir@initech.test", 1),
            ("Alice", "Wesker", "alice@umbrella.test", 2),
            ("Gavin", "Belson", "gavin@hooli.test", 3),
            ("Art", "Vandelay", "art@vandelay.test", 4))  # fmt: skip


def seed(conn: sqlite3.Connection) -> None:
    """Users, a queue, 250 cases (``00001001``–``00001250``) and some comments, all from ids."""
    users = [sf_id("005", n) for n, *_ in USERS]
    at = sf_datetime(_SEED_EPOCH)
    system = {"CreatedDate": at, "CreatedById": users[0], "LastModifiedDate": at,
              "LastModifiedById": users[0], "SystemModstamp": at}  # fmt: skip
    for n, first, last, username, email, active in USERS:
        _save(conn, _USER, {"Id": sf_id("005", n), "Username": username, "FirstName": first,
              "LastName": last, "Name": f"{first} {last}", "CompanyName": "Globex",
              "Title": "Support Agent" if n > 2 else "Administrator", "Email": email,
              "Alias": (first[0] + last)[:8].lower(), "IsActive": active,
              "TimeZoneSidKey": "Europe/London", "LocaleSidKey": "en_GB",
              "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "en_US", "UserType": "Standard",
              "FederationIdentifier": None, **system})  # fmt: skip
    _save(conn, _GROUP, {"Id": _QUEUE_ID, "Name": "Tier 1 Support", "Type": "Queue",
          "DeveloperName": "Tier_1_Support", "Email": "tier1@globex.test", **system})  # fmt: skip
    for n, (name, country) in enumerate(ACCOUNTS, start=1):
        account: Json = {f.name: False if f.type == "boolean" else None for f in _ACCOUNT.fields}
        account.update({"Id": sf_id("001", n), "Name": name, "OwnerId": users[2],
                        "AccountNumber": f"ACC-{1000 + n}", "Industry": _INDUSTRIES[n % 5],
                        "BillingCountry": country, "Phone": f"+44 20 7946 {n:04d}",
                        **system})  # fmt: skip
        _save(conn, _ACCOUNT, account)
    for n, (first, last, email, account_n) in enumerate(CONTACTS, start=1):
        contact: Json = {f.name: False if f.type == "boolean" else None for f in _CONTACT.fields}
        contact.update({"Id": sf_id("003", n), "FirstName": first, "LastName": last,
                        "Email": email, "AccountId": sf_id("001", account_n),
                        "Phone": f"+1 415 555 {n:04d}", "Title": "Customer",
                        "OwnerId": users[2], **system})  # fmt: skip
        _derive(_CONTACT, contact, _SEED_EPOCH)
        _save(conn, _CONTACT, contact)
    agents = users[2:5]
    for i in range(1, 251):
        status = _STATUSES[i % 4] if i != 123 else "New"
        created = _SEED_EPOCH + i * 3600
        owner = _QUEUE_ID if status == "New" or i % 3 == 0 else agents[i // 3 % 3]
        data: Json = {f.name: False if f.type == "boolean" else None for f in _CASE.fields}
        data.update({
            "Id": sf_id("500", i), "CaseNumber": f"{1000 + i:08d}", "Status": status,
            "Subject": f"{_TOPICS[i % 7]} #{i}", "Priority": _PRIORITIES[i % 3],
            "Origin": _ORIGINS[i % 3], "Type": _TYPES[i % 5], "Reason": _REASONS[i % 7],
            "Description": f"Seed case {i}: {_TOPICS[i % 7].lower()}.", "OwnerId": owner,
            "SuppliedEmail": f"customer{i % 9}@initech.test", "Product__c": _PRODUCTS[i % 8],
            "Legacy_Ref__c": "ZD-DUP" if i in (201, 202) else f"ZD-{i}",
            **system, "CreatedDate": sf_datetime(created),
            "LastModifiedDate": sf_datetime(created + 1800),
        })  # fmt: skip
        if i == 123:
            data.update(Priority="Medium", Origin="Web")  # the quickstart case
        _derive(_CASE, data, created + 1800)
        _save(conn, _CASE, data)
        notes = [(i % 4 == 0, "We are looking into it."), (i % 10 == 0, "Customer called twice.")]
        for k, (wanted, text) in enumerate(notes):
            if wanted:
                comment = {"Id": sf_id("00a", i * 2 + k), "ParentId": data["Id"],
                           "IsPublished": k == 0, "CommentBody": text, "IsDeleted": False,
                           **system, "CreatedById": agents[i % 3],
                           "CreatedDate": sf_datetime(created + 600 * (k + 1))}  # fmt: skip
                _save(conn, _COMMENT, comment)
    creds = get_meta(conn, "credentials") or {}
    if creds.get("refresh_token"):  # the dev refresh token, as if issued by a web-server flow
        conn.execute(
            "INSERT OR IGNORE INTO oauth_tokens (token, kind, user_id, issued_at) "
            "VALUES (?, 'refresh', ?, ?)",
            (creds["refresh_token"], users[0], _SEED_EPOCH),
        )


# --------------------------------------------------------------------------- SOQL
# The subset UWF's connector and the vendors' clients use:
#   SELECT p[, Rel.p …] FROM Obj [WHERE p op literal [AND …]]
#   [ORDER BY p [ASC|DESC], …] [LIMIT n]
# with op one of = != <> IN (…). Anything else (OR, LIKE, ranges, functions, subqueries,
# OFFSET, NULLS LAST) is MALFORMED_QUERY, the way Salesforce answers what it cannot parse.

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<>|<=|>=|=|<|>|,|\(|\))"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<bad>\S))"
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_KEYWORDS = {"select", "from", "where", "order", "by", "limit", "and", "or", "not"}
_OPERATORS = ("=", "!=", "<>", "IN")
Path = tuple[str, ...]  # ("Subject",) or ("Owner", "Email")


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed SOQL query."""

    obj: SObjectDef
    fields: tuple[Path, ...]
    where: tuple[tuple[Path, str, tuple[Any, ...]], ...]
    order: tuple[tuple[Path, bool], ...]  # path, descending
    limit: int | None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        found = [(m.lastgroup or "bad", m) for m in _TOKEN.finditer(text.rstrip())]
        self.tokens = [(kind, m.group(kind), m.start(kind) + 1) for kind, m in found]
        self.pos = 0

    def fail(self, code: str = "MALFORMED_QUERY", detail: str | None = None) -> SalesforceError:
        """Salesforce's error: the query, a caret under the culprit, its row and column."""
        at = min(self.pos, len(self.tokens) - 1)
        col = self.tokens[at][2] if self.tokens else 1
        if detail is None:
            ended = self.pos >= len(self.tokens)
            detail = (
                "unexpected end of query" if ended else f"unexpected token: '{self.tokens[at][1]}'"
            )
        message = f"\n{self.text}\n{' ' * (col - 1)}^\nERROR at Row:1:Column:{col}\n{detail}"
        return SalesforceError(400, code, message)

    def peek(self, word: str) -> bool:
        return self.pos < len(self.tokens) and self.tokens[self.pos][1].lower() == word

    def take(self, kind: str | None = None, word: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise self.fail()
        token_kind, text, _ = self.tokens[self.pos]
        if (kind and token_kind != kind) or (word and text.lower() != word):
            raise self.fail()
        self.pos += 1
        return text

    def path(self, obj: SObjectDef) -> Path:
        raw = self.take("word")
        parts = raw.split(".")
        if raw.lower() in _KEYWORDS or self.peek("("):  # functions are not emulated
            self.pos -= 1
            raise self.fail()
        if len(parts) == 1 and (f := obj.field(raw)):
            return (f.name,)
        rel = obj.by_relationship.get(parts[0].lower()) if len(parts) == 2 else None
        targets = [OBJECTS[r.lower()] for r in rel.refs if r.lower() in OBJECTS] if rel else []
        found = [f for t in targets if (f := t.field(parts[-1]))]
        if rel is not None and rel.relationship and found:
            return (rel.relationship, found[0].name)
        self.pos -= 1
        raise self.fail("INVALID_FIELD", no_such_column(raw, obj.name))

    def literal(self, obj: SObjectDef, path: Path) -> Any:
        kind, text = (self.tokens[self.pos][:2]) if self.pos < len(self.tokens) else ("", "")
        value: Any
        if kind == "str":
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])
        elif kind == "num":
            value = float(text)
        elif kind == "word" and text.lower() in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[text.lower()]
        else:
            raise self.fail()
        f = obj.field(path[0]) if len(path) == 1 else None
        if f is not None and f.type in ("id", "reference") and isinstance(value, str):
            value = normalize_id(value)
            if value is None:
                raise self.fail("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {text}")
        self.pos += 1
        return value

    def condition(self, obj: SObjectDef) -> tuple[Path, str, tuple[Any, ...]]:
        path = self.path(obj)
        op = self.take().upper()
        if op not in _OPERATORS:
            self.pos -= 1
            raise self.fail()
        if op != "IN":
            return path, "!=" if op == "<>" else op, (self.literal(obj, path),)
        self.take("op", "(")
        values = [self.literal(obj, path)]
        while self.peek(","):
            self.take()
            values.append(self.literal(obj, path))
        self.take("op", ")")
        return path, op, tuple(values)

    def number(self) -> int:
        text = self.take("num")
        if not text.isdigit():
            self.pos -= 1
            raise self.fail()
        return int(text)

    def parse(self) -> Query:
        self.take("word", "select")
        start = self.pos
        while not self.peek("from"):  # the select list is resolved once the object is known
            self.take()
        self.take("word", "from")
        name = self.take("word")
        obj = OBJECTS.get(name.lower())
        if obj is None:
            self.pos -= 1
            detail = (
                f"sObject type '{name}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference "
                "your WSDL or the describe call for the appropriate names."
            )
            raise self.fail("INVALID_TYPE", detail)
        end, self.pos = self.pos, start
        fields = [self.path(obj)]
        while self.peek(","):
            self.take()
            fields.append(self.path(obj))
        self.take("word", "from")
        self.pos = end
        where, order = [], []
        if self.peek("where"):
            self.take()
            where.append(self.condition(obj))
            while self.peek("and"):
                self.take()
                where.append(self.condition(obj))
        if self.peek("order"):
            self.take()
            self.take("word", "by")
            while True:
                path, desc = self.path(obj), self.peek("desc")
                if desc or self.peek("asc"):
                    self.take()
                order.append((path, desc))
                if not self.peek(","):
                    break
                self.take()
        limit = None
        if self.peek("limit"):
            self.take()
            limit = self.number()
        if self.pos < len(self.tokens):
            raise self.fail()
        return Query(obj, tuple(fields), tuple(where), tuple(order), limit)


def _value(conn: sqlite3.Connection, obj: SObjectDef, data: Json, path: Path) -> Any:
    if len(path) == 1:
        return data.get(path[0])
    fk = obj.by_relationship[path[0].lower()].name
    found = load(conn, data[fk]) if data.get(fk) else None
    return found[1].get(path[1]) if found else None


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _matches(value: Any, op: str, literals: tuple[Any, ...]) -> bool:
    """SOQL equality: text compares case-insensitively, null only equals null."""
    found = any(_fold(value) == _fold(lit) for lit in literals)
    return found if op in ("=", "IN") else not found


def _order_key(values: dict[str, Any], row: tuple[str, Json]) -> tuple[Any, ...]:
    # Nulls sort first ascending and last descending, as in SOQL; the tuples keep None away
    # from real values, so mixed types never meet in a comparison.
    value = values[row[0]]
    return (0,) if value is None else (1, _fold(value))


def run_query(conn: sqlite3.Connection, soql: str) -> tuple[Query, list[str]]:
    """Parse and run ``soql``; returns the query and the ids of the matching records, in order."""
    q = _Parser(soql).parse()
    sql, args = "SELECT id, data FROM sobjects WHERE type = ?", [q.obj.name]
    for path, op, values in q.where[:1]:  # narrowed in SQLite; every condition is checked below
        if op == "=" and len(path) == 1 and isinstance(values[0], str):
            sql += " AND json_extract(data, ?) = ? COLLATE NOCASE"
            args += [f"$.{path[0]}", values[0]]
    rows = [
        (str(r["id"]), json.loads(r["data"])) for r in conn.execute(sql + " ORDER BY rowid", args)
    ]
    rows = [
        (rid, data)
        for rid, data in rows
        if all(_matches(_value(conn, q.obj, data, p), op, v) for p, op, v in q.where)
    ]
    for path, desc in reversed(q.order):  # stable sorts, last key first
        by_id = {rid: _value(conn, q.obj, data, path) for rid, data in rows}
        rows.sort(key=functools.partial(_order_key, by_id), reverse=desc)
    return q, [rid for rid, _ in rows[: q.limit]]


def query_records(conn: sqlite3.Connection, q: Query, ids: Sequence[str]) -> list[Json]:
    """Query-result JSON: the selected fields; relationship fields as nested records."""
    out = []
    for rid in ids:
        found = load(conn, rid)
        if found is None:
            continue  # deleted since the query ran
        data = found[1]
        record: Json = {"attributes": attributes(q.obj, rid)}
        for path in q.fields:
            if len(path) == 1:
                record[path[0]] = data.get(path[0])
                continue
            fk = q.obj.by_relationship[path[0].lower()].name
            target = load(conn, data[fk]) if data.get(fk) else None
            if target is None:
                record[path[0]] = None
            else:
                nested = record.get(path[0]) or {
                    "attributes": attributes(target[0], target[1]["Id"])
                }
                nested[path[1]] = target[1].get(path[1])
                record[path[0]] = nested
        out.append(record)
    return out
