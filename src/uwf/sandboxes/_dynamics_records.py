"""Dataverse sandbox records: tables, seed data, JSON shapes, OData queries and validation.

Everything here works on a `sqlite3.Connection` inside one `SandboxStore` unit of work and
knows nothing of HTTP; `dynamics` holds the routes. Each table is described once as an
`Entity` (columns, lookups, alternate keys, after Microsoft's entity reference); the SQL schema,
JSON shapes, `EntityDefinitions` metadata, `$select`/`$filter`/`$orderby` and write validation
all derive from those descriptions. Helpers raise `DynamicsError`, the Web API's own error
body, so a route can let them propagate unchanged.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._store import next_id, set_meta

__all__ = [
    "ADMIN_EMAIL",
    "API",
    "BUSINESS_UNIT_ID",
    "ENTITIES",
    "INCIDENT",
    "ORGANIZATION_ID",
    "ORG_URL",
    "QUICKSTART_INCIDENT_ID",
    "QUICKSTART_TICKET",
    "SCHEMA",
    "TENANT_DOMAIN",
    "USERS",
    "DynamicsError",
    "Entity",
    "FreshSecrets",
    "Query",
    "access_claims",
    "attribute_json",
    "check_duplicates",
    "entity_definition_json",
    "etag",
    "find_row",
    "guid",
    "make_credentials",
    "mint_token",
    "parse_query",
    "read_token",
    "record_json",
    "seed",
    "select_rows",
    "validate_changes",
    "write_row",
]

ORG_URL = "https://uwf-sandbox.crm.dynamics.com"  # the resource its tokens are issued for
API = "/api/data/v9.2"
TENANT_DOMAIN = "uwf-sandbox.onmicrosoft.com"
ADMIN_EMAIL = "admin@uwf-sandbox.test"
QUICKSTART_TICKET = "CAS-01123-X1Y2Z3"
_NS = uuid.UUID("5f1c2a8e-7d0b-4c57-9a3e-2b8f0d6c1e44")
_SEED_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: seeded timestamps never change
_GUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def guid(kind: str, key: object) -> str:
    """A deterministic GUID, so seeded records have the same ids on every machine."""
    return str(uuid.uuid5(_NS, f"{kind}:{key}"))


ORGANIZATION_ID, BUSINESS_UNIT_ID = guid("organization", 1), guid("businessunit", 1)
QUICKSTART_INCIDENT_ID = guid("incident", 23)  # the case numbered QUICKSTART_TICKET
# (key, first name, last name, email, disabled). The application user is added at seed time:
# its applicationid is the client id of the app registration, drawn at random on first start.
USERS = (
    ("admin", "Sandbox", "Admin", ADMIN_EMAIL, False),
    ("alice", "Alice", "Agent", "alice@acme.test", False),
    ("bob", "Bob", "Agent", "bob@acme.test", False),
    ("carol", "Carol", "Agent", "carol@acme.test", False),
    ("dave", "Dave", "Former", "dave@acme.test", True),
)
# (name, telephone1, websiteurl, industrycode, address1_country), accounts 0..4.
ACCOUNTS = (
    ("Contoso Pharmaceuticals", "+1 425 555 0100", "https://contoso.example", 17, "United States"),
    ("Fabrikam", "+1 206 555 0110", "https://fabrikam.example", 12, "United States"),
    ("Adventure Works", "+1 604 555 0120", "https://adventure-works.example", 25, "Canada"),
    ("Litware", "+44 20 7946 0130", "https://litware.example", 6, "United Kingdom"),
    ("Northwind", "+49 30 5555 0140", "https://northwind.example", 33, "Germany"),
)
# (first name, last name, email, job title, mobile, account), contacts 0..5.
CONTACTS = (
    ("Yvonne", "McKay", "yvonne.mckay@contoso.test", "Purchasing Manager", "+1 425 555 0101", 0),
    ("Paul", "Cannon", "paul.cannon@contoso.test", "Lab Director", None, 0),
    ("Rene", "Valdes", "rene.valdes@fabrikam.test", "CTO", "+1 206 555 0111", 1),
    ("Nancy", "Anderson", "nancy.anderson@adventure-works.test", "Buyer", None, 2),
    ("Maria", "Campbell", "maria.campbell@litware.test", "Office Manager", None, 3),
    ("Sidney", "Higa", "sidney.higa@northwind.test", "Owner", "+49 170 5555 0141", 4),
)
TOPICS = ("Printer is offline", "Cannot sign in", "Refund request", "Invoice missing",
          "Shipping delay", "Password reset", "Export fails", "Dark mode")  # fmt: skip

# --------------------------------------------------------------------------- definitions

# AttributeType values, as EntityDefinitions reports them.
GUID, STR, MEMO, PICK = "Uniqueidentifier", "String", "Memo", "Picklist"
STATE, STATUS, BOOL, DT = "State", "Status", "Boolean", "DateTime"
LOOKUP, OWNER, CUSTOMER, NAME, BIGINT = "Lookup", "Owner", "Customer", "EntityName", "BigInt"
_LOOKUPS = frozenset({LOOKUP, OWNER, CUSTOMER})
_EDM = {GUID: "Edm.Guid", STR: "Edm.String", MEMO: "Edm.String", PICK: "Edm.Int32",
        STATE: "Edm.Int32", STATUS: "Edm.Int32", BOOL: "Edm.Boolean", DT: "Edm.DateTimeOffset",
        LOOKUP: "Edm.Guid", OWNER: "Edm.Guid", CUSTOMER: "Edm.Guid", NAME: "Edm.String",
        BIGINT: "Edm.Int64"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attr:
    """One column, as `EntityDefinitions(...)/Attributes` describes it."""

    name: str
    kind: str
    create: bool = False  # IsValidForCreate
    update: bool = False  # IsValidForUpdate
    length: int | None = None
    options: tuple[tuple[int, str], ...] = ()
    required: str = "None"
    custom: bool = False

    @property
    def key(self) -> str:
        """The JSON property: lookups are read as `_<name>_value`."""
        return f"_{self.name}_value" if self.kind in _LOOKUPS else self.name

    @property
    def edm(self) -> str:
        return _EDM[self.kind]


def _a(name: str, kind: str, cu: str = "cu", **extra: Any) -> Attr:
    return Attr(name, kind, create="c" in cu, update="u" in cu, **extra)


@dataclass(frozen=True, slots=True)
class Entity:
    """A table: its entity set, columns, lookups settable by `@odata.bind`, alternate keys."""

    logical: str
    set_name: str
    primary_name: str
    attr_list: tuple[Attr, ...]
    binds: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # nav → (column, set)
    alternate_keys: tuple[str, ...] = ()
    writable: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)  # column values of a new record

    @property
    def pk(self) -> str:
        return f"{self.logical}id"

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"

    @property
    def attrs(self) -> dict[str, Attr]:
        return {a.name: a for a in self.attr_list}

    def attr_by_key(self, key: str) -> Attr:
        """The attribute a `$select`/`$filter` property names; 400 when there is none."""
        for a in self.attr_list:
            if a.key == key:
                return a
        message = f"Could not find a property named '{key}' on type '{self.type_name}'."
        raise DynamicsError(400, "0x0", message)


def _base(entity: str, owned: bool = True) -> tuple[Attr, ...]:
    common = (_a(f"{entity}id", GUID, "c", required="SystemRequired"), _a("createdon", DT, ""),
              _a("modifiedon", DT, ""), _a("createdby", LOOKUP, ""), _a("modifiedby", LOOKUP, ""),
              _a("versionnumber", BIGINT, ""))  # fmt: skip
    owner = (_a("ownerid", OWNER, "", required="SystemRequired"), _a("owninguser", LOOKUP, ""),
             _a("owningbusinessunit", LOOKUP, ""))  # fmt: skip
    return common + owner if owned else common


# The account's `industrycode` choices, as a new organisation has them.
INDUSTRIES = ((1, "Accounting"), (2, "Agriculture and Non-petrol Natural Resource Extraction"),
              (3, "Broadcasting Printing and Publishing"), (4, "Brokers"),
              (5, "Building Supply Retail"), (6, "Business Services"), (7, "Consulting"),
              (8, "Consumer Services"), (9, "Design, Direction and Creative Management"),
              (10, "Distributors, Dispatchers and Processors"),
              (11, "Doctor's Offices and Clinics"), (12, "Durable Manufacturing"),
              (13, "Eating and Drinking Places"), (14, "Entertainment Retail"),
              (15, "Equipment Rental and Leasing"), (16, "Financial"),
              (17, "Food and Tobacco Processing"), (18, "Inbound Capital Intensive Processing"),
              (19, "Inbound Repair and Services"), (20, "Insurance"), (21, "Legal Services"),
              (22, "Non-Durable Merchandise Retail"), (23, "Outbound Consumer Service"),
              (24, "Petrochemical Extraction and Distribution"), (25, "Service Retail"),
              (26, "SIG Affiliations"), (27, "Social Services"),
              (28, "Special Outbound Trade Contractors"), (29, "Specialty Realty"),
              (30, "Transportation"), (31, "Utility Creation and Distribution"),
              (32, "Vehicle Retail"), (33, "Wholesale"))  # fmt: skip
STATE_OF_STATUS = {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 1000: 1, 6: 2, 2000: 2}
DEFAULT_STATUS = {0: 1, 1: 5, 2: 6}
_CASE_STATES = ((0, "Active"), (1, "Resolved"), (2, "Canceled"))
# fmt: off
# The tables below are data, one column per line as the entity reference lists them.
INCIDENT = Entity("incident", "incidents", "title", (*_base("incident"),
    _a("title", STR, length=200, required="ApplicationRequired"),
    _a("description", MEMO, length=2000),
    _a("ticketnumber", STR, "c", length=100),
    _a("prioritycode", PICK, options=((1, "High"), (2, "Normal"), (3, "Low"))),
    _a("casetypecode", PICK, options=((1, "Question"), (2, "Problem"), (3, "Request"))),
    _a("caseorigincode", PICK, options=((1, "Phone"), (2, "Email"), (3, "Web"),
                                        (2483, "Facebook"), (3986, "Twitter"))),
    _a("statecode", STATE, "u", options=_CASE_STATES, required="SystemRequired"),
    _a("statuscode", STATUS, options=((1, "In Progress"), (2, "On Hold"),
        (3, "Waiting for Details"), (4, "Researching"), (5, "Problem Solved"),
        (1000, "Information Provided"), (6, "Canceled"), (2000, "Merged"))),
    _a("isescalated", BOOL),
    _a("customerid", CUSTOMER, "", required="SystemRequired"),
    _a("customeridtype", NAME, ""),
    _a("uwf_key", STR, length=100, custom=True),  # the alternate key UWF creates cases by
), {"ownerid": ("ownerid", "systemusers"), "customerid_account": ("customerid", "accounts")},
    alternate_keys=("uwf_key",), writable=True,
    defaults={"statecode": 0, "statuscode": 1, "prioritycode": 2, "isescalated": 0})
ANNOTATION = Entity("annotation", "annotations", "subject", (*_base("annotation"),
    _a("subject", STR, length=500),
    _a("notetext", MEMO, length=100000),
    _a("isdocument", BOOL),
    _a("filename", STR, length=255),
    _a("mimetype", STR, length=256),
    _a("objectid", LOOKUP, ""),
    _a("objecttypecode", NAME, ""),
), {"objectid_incident": ("objectid", "incidents"), "ownerid": ("ownerid", "systemusers")},
    writable=True, defaults={"isdocument": 0})
SYSTEMUSER = Entity("systemuser", "systemusers", "fullname", (*_base("systemuser", False),
    _a("fullname", STR, "", length=200),
    _a("firstname", STR, length=64),
    _a("lastname", STR, length=64),
    _a("internalemailaddress", STR, length=100),
    _a("domainname", STR, length=1024, required="SystemRequired"),
    _a("isdisabled", BOOL, ""),
    _a("accessmode", PICK, options=((0, "Read-Write"), (1, "Administrative"), (2, "Read"),
                                    (3, "Support User"), (4, "Non-interactive"))),
    _a("applicationid", GUID),
    _a("azureactivedirectoryobjectid", GUID),
    _a("businessunitid", LOOKUP, ""),
))
ACCOUNT = Entity("account", "accounts", "name", (*_base("account"),
    _a("name", STR, length=160, required="ApplicationRequired"),
    _a("accountnumber", STR, length=20),
    _a("telephone1", STR, length=50),
    _a("websiteurl", STR, length=200),
    _a("industrycode", PICK, options=INDUSTRIES),
    _a("address1_country", STR, length=80),
    _a("description", MEMO, length=2000),
    _a("statecode", STATE, "u", options=((0, "Active"), (1, "Inactive")),
       required="SystemRequired"),
    _a("statuscode", STATUS, options=((1, "Active"), (2, "Inactive"))),
    _a("uwf_key", STR, length=100, custom=True),  # the alternate key UWF creates accounts by
), {"ownerid": ("ownerid", "systemusers")}, alternate_keys=("uwf_key",), writable=True,
    defaults={"statecode": 0, "statuscode": 1})
CONTACT = Entity("contact", "contacts", "fullname", (*_base("contact"),
    _a("firstname", STR, length=50),
    _a("lastname", STR, length=50, required="ApplicationRequired"),
    _a("fullname", STR, "", length=160),  # computed from first and last name
    _a("emailaddress1", STR, length=100),
    _a("telephone1", STR, length=50),
    _a("mobilephone", STR, length=50),
    _a("jobtitle", STR, length=100),
    _a("description", MEMO, length=2000),
    _a("parentcustomerid", CUSTOMER, ""),
    _a("parentcustomeridtype", NAME, ""),
    _a("statecode", STATE, "u", options=((0, "Active"), (1, "Inactive")),
       required="SystemRequired"),
    _a("statuscode", STATUS, options=((1, "Active"), (2, "Inactive"))),
    _a("uwf_key", STR, length=100, custom=True),  # the alternate key UWF creates contacts by
), {"ownerid": ("ownerid", "systemusers"),
    "parentcustomerid_account": ("parentcustomerid", "accounts"),
    "parentcustomerid_contact": ("parentcustomerid", "contacts")},
    alternate_keys=("uwf_key",), writable=True, defaults={"statecode": 0, "statuscode": 1})
# fmt: on
ENTITIES = {e.set_name: e for e in (INCIDENT, ANNOTATION, SYSTEMUSER, ACCOUNT, CONTACT)}


def _table_sql(entity: Entity) -> str:
    def column(a: Attr) -> str:
        kind = "INTEGER" if _EDM[a.kind] in ("Edm.Int32", "Edm.Int64", "Edm.Boolean") else "TEXT"
        return f"{a.name} {kind}{' PRIMARY KEY' if a.name == entity.pk else ''}"

    columns = ", ".join(map(column, entity.attr_list))
    return f"CREATE TABLE IF NOT EXISTS {entity.logical} ({columns});"


SCHEMA = "\n".join(map(_table_sql, ENTITIES.values())) + """
CREATE UNIQUE INDEX IF NOT EXISTS incident_uwf_key ON incident (uwf_key) WHERE uwf_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS account_uwf_key ON account (uwf_key) WHERE uwf_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS contact_uwf_key ON contact (uwf_key) WHERE uwf_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS annotation_objectid ON annotation (objectid);
CREATE TABLE IF NOT EXISTS refresh_token (token TEXT PRIMARY KEY, client_id TEXT NOT NULL,
    oid TEXT NOT NULL, issued_at REAL NOT NULL, expires_at REAL NOT NULL);
"""  # fmt: skip

# --------------------------------------------------------------------------- errors


class DynamicsError(Exception):
    """A response in the Web API's error format, raised from anywhere in a handler."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})

    @property
    def body(self) -> Json:
        return {"error": {"code": self.code, "message": self.message}}


def _bad(message: str, code: str = "0x0") -> DynamicsError:
    return DynamicsError(400, code, message)


def _payload_error(entity: Entity, detail: str) -> DynamicsError:
    message = (f"Error identified in Payload provided by the user for Entity :'{entity.set_name}'"
               f"  ---->  InnerException : Microsoft.OData.ODataException: {detail}")  # fmt: skip
    return DynamicsError(400, "0x80048d19", message)


# --------------------------------------------------------------------------- JSON shapes


def etag(row: Mapping[str, Any]) -> str:
    return f'W/"{row["versionnumber"]}"'


def record_json(entity: Entity, row: Mapping[str, Any], select: tuple[Attr, ...] = ()) -> Json:
    """A row as the Web API returns it: `$select`ed columns (or all) plus the key and etag."""
    out: Json = {"@odata.etag": etag(row)}
    pk = entity.attrs[entity.pk]
    for a in (*select, pk) if select and pk not in select else select or entity.attr_list:
        value = row[a.name]
        out[a.key] = bool(value) if a.kind == BOOL and value is not None else value
    return out


def _label(text: str) -> Json:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True,
                 "MetadataId": guid("label", text), "HasChanged": None}  # fmt: skip
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def entity_definition_json(entity: Entity) -> Json:
    """The `EntityDefinitions(LogicalName=...)` properties a schema check reads."""
    return {
        "MetadataId": guid("entity", entity.logical),
        "LogicalName": entity.logical,
        "EntitySetName": entity.set_name,
        "PrimaryIdAttribute": entity.pk,
        "PrimaryNameAttribute": entity.primary_name,
        "IsCustomEntity": False,
        "OwnershipType": "UserOwned" if "ownerid" in entity.attrs else "BusinessOwned",
        "DisplayName": _label(entity.logical.capitalize()),
    }


def attribute_json(entity: Entity, a: Attr, option_set: bool = False) -> Json:
    """One `AttributeMetadata`, typed by `@odata.type`; ``option_set`` expands the choices."""
    kind = {GUID: "UniqueIdentifier", OWNER: "Lookup", CUSTOMER: "Lookup"}.get(a.kind, a.kind)
    required = {"Value": a.required, "CanBeChanged": a.required != "SystemRequired",
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}  # fmt: skip
    out: Json = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{kind}AttributeMetadata",
        "MetadataId": guid("attribute", f"{entity.logical}.{a.name}"),
        "LogicalName": a.name,
        "EntityLogicalName": entity.logical,
        "AttributeType": a.kind,
        "AttributeTypeName": {"Value": f"{a.kind}Type"},
        "IsCustomAttribute": a.custom,
        "IsValidForCreate": a.create,
        "IsValidForUpdate": a.update,
        "IsValidForRead": True,
        "RequiredLevel": required,
    }
    if a.length is not None:
        out["MaxLength"] = a.length
    if option_set and a.options:
        options = [{"Value": v, "Label": _label(t), "Color": None, "IsManaged": True}
                   for v, t in a.options]  # fmt: skip
        out["OptionSet"] = {"MetadataId": guid("optionset", f"{entity.logical}.{a.name}"),
                            "Name": f"{entity.logical}_{a.name}", "IsGlobal": False,
                            "OptionSetType": a.kind, "Options": options}  # fmt: skip
    return out


# --------------------------------------------------------------------------- queries

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<guid>[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})"
    r"(?![\w-])|(?P<date>\d{4}-\d\d-\d\dT[\d:.]+Z)|(?P<num>-?\d+)(?![\w.])|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][\w.]*))"
)
_OPS = {"eq": ("=", "Equal"), "ne": ("!=", "NotEqual"), "gt": (">", "GreaterThan"),
        "ge": (">=", "GreaterThanOrEqual"), "lt": ("<", "LessThan"),
        "le": ("<=", "LessThanOrEqual")}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Query:
    """`$select`, `$filter`, `$orderby` and `$top` of one request, checked and turned to SQL."""

    select: tuple[Attr, ...] = ()
    where: str = "1"
    args: tuple[Any, ...] = ()
    order: str = "rowid"
    top: int | None = None


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].lstrip().startswith("'"):
                raise _bad(f"There is an unterminated literal at position {len(text)} in '{text}'.")
            raise _syntax(text, pos)
        kind = match.lastgroup or "word"
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


def _syntax(text: str, pos: int) -> DynamicsError:
    return _bad(f"Syntax error at position {pos} in '{text}'.")


def _literal(kind: str, text: str) -> tuple[str, Any] | None:
    if kind == "word" and text in ("true", "false"):
        return "Edm.Boolean", int(text == "true")
    if kind == "str":
        return "Edm.String", text[1:-1].replace("''", "'")
    edm = {"guid": "Edm.Guid", "num": "Edm.Int32", "date": "Edm.DateTimeOffset"}.get(kind)
    if edm is None:
        return None
    return edm, int(text) if kind == "num" else text.lower() if kind == "guid" else text


def _filter_sql(entity: Entity, text: str) -> tuple[str, tuple[Any, ...]]:
    """`$filter` (comparisons joined by and/or/not and parentheses) as a SQL condition.

    SQL gives `and` precedence over `or` just as OData does, so one linear pass that checks
    each comparison and copies the connectives is a faithful translation.
    """
    tokens, out, args, depth, operand, i = _tokens(text), [], [], 0, True, 0
    while i < len(tokens):
        kind, value, pos = tokens[i]
        if operand and value in ("(", "not"):
            out.append("(" if value == "(" else "NOT")
            depth, i = depth + (value == "("), i + 1
        elif not operand and (value in ("and", "or") or (value == ")" and depth)):
            out.append(value.upper())
            depth, operand, i = depth - (value == ")"), value != ")", i + 1
        elif not operand or kind != "word":
            raise _syntax(text, pos)
        elif i + 2 >= len(tokens):
            raise _syntax(text, len(text))
        elif tokens[i + 1][1] == "(":
            raise _bad(f"The function '{value}' in $filter is not emulated by the sandbox.")
        else:
            attr, (_, op, op_pos), (lit_kind, lit, lit_pos) = (
                entity.attr_by_key(value), tokens[i + 1], tokens[i + 2])  # fmt: skip
            if op not in _OPS:
                raise _syntax(text, op_pos)
            parsed = _literal(lit_kind, lit)
            if lit == "null" and op in ("eq", "ne"):
                out.append(f"{attr.name} IS {'NOT ' if op == 'ne' else ''}NULL")
            elif parsed is None:
                raise _syntax(text, lit_pos)
            elif parsed[0] != attr.edm and (parsed[0], attr.edm) != ("Edm.Int32", "Edm.Int64"):
                raise _bad("A binary operator with incompatible types was detected. Found "
                           f"operand types '{attr.edm}' and '{parsed[0]}' for operator kind "
                           f"'{_OPS[op][1]}'.")  # fmt: skip
            else:
                nocase = " COLLATE NOCASE" if parsed[0] in ("Edm.String", "Edm.Guid") else ""
                out.append(f"{attr.name} {_OPS[op][0]} ?{nocase}")
                args.append(parsed[1])
            operand, i = False, i + 3
    if operand or depth:
        raise _syntax(text, len(text))
    return " ".join(out), tuple(args)


def parse_query(entity: Entity, params: Mapping[str, str]) -> Query:
    """Check and translate the system query options of one request (400 on any mistake)."""
    known = ("$select", "$filter", "$orderby", "$top", "$skiptoken")
    if unknown := [n for n in params if n.startswith("$") and n not in known]:
        raise _bad(f"The query option '{unknown[0]}' is not emulated by the sandbox.")
    names = [n.strip() for n in params.get("$select", "").split(",") if n.strip()]
    select = tuple(entity.attr_by_key(name) for name in names)
    where, args = _filter_sql(entity, params["$filter"]) if params.get("$filter") else ("1", ())
    order = []
    for clause in filter(None, (c.strip() for c in params.get("$orderby", "").split(","))):
        name, _, direction = clause.partition(" ")
        if direction.strip() not in ("", "asc", "desc"):
            raise _syntax(clause, len(name) + 1)
        order.append(f"{entity.attr_by_key(name).name} {direction.strip() or 'asc'}")
    top = params.get("$top")
    if top is not None and not top.isdigit():
        raise _bad(f"Invalid value '{top}' for $top query option found. "
                   "The $top query option requires a non-negative integer value.")  # fmt: skip
    order_sql = ", ".join([*order, "rowid"])
    return Query(select, where, args, order_sql, None if top is None else int(top))


def select_rows(
    conn: sqlite3.Connection, entity: Entity, query: Query, offset: int, limit: int,
    scope: tuple[str, tuple[Any, ...]] = ("1", ()),
) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
    """A page of rows and whether more follow it."""
    sql = (f"SELECT * FROM {entity.logical} WHERE ({query.where}) AND ({scope[0]}) "  # noqa: S608 - names come from Entity definitions; values are parameters
           f"ORDER BY {query.order} LIMIT ? OFFSET ?")  # fmt: skip
    rows = [dict(r) for r in conn.execute(sql, (*query.args, *scope[1], limit + 1, offset))]
    return rows[:limit], len(rows) > limit


def find_row(
    conn: sqlite3.Connection, entity: Entity, key: str | tuple[str, str]
) -> dict[str, Any] | None:
    """A row by primary key, or by ``(alternate key column, value)``."""
    column, value = key if isinstance(key, tuple) else (entity.pk, key.lower())
    sql = f"SELECT * FROM {entity.logical} WHERE {column} = ?"  # noqa: S608 - our column names
    row = conn.execute(sql, (value,)).fetchone()
    return None if row is None else dict(row)


# --------------------------------------------------------------------------- writes


def _bind(conn: sqlite3.Connection, entity: Entity, nav: str, value: Any, base: str) -> str:
    """The GUID an `@odata.bind` value points to (`/systemusers(<id>)`, relative or absolute)."""
    target = ENTITIES[entity.binds[nav][1]]
    text = value if isinstance(value, str) else ""
    for prefix in (f"{base}{API}/", f"{ORG_URL}{API}/", "/"):
        text = text.removeprefix(prefix)
    match = re.fullmatch(rf"{target.set_name}\(({_GUID.pattern})\)", text)
    if match is None:
        raise _payload_error(entity, f"The value {value!r} of '{nav}@odata.bind' is not a valid "
                             f"URI of an entity in the set '{target.set_name}'.")  # fmt: skip
    found = find_row(conn, target, match.group(1))
    if found is None:
        message = f"{target.logical} With Id = {match.group(1)} Does Not Exist"
        raise DynamicsError(404, "0x80040217", message)
    if target is SYSTEMUSER and found["isdisabled"]:
        raise _bad(f"The specified user(Id = {match.group(1)}) is disabled.", "0x80040225")
    return match.group(1).lower()


_TYPE_COLUMN = {
    "customerid": "customeridtype",
    "objectid": "objecttypecode",
    "parentcustomerid": "parentcustomeridtype",
}


def validate_changes(
    conn: sqlite3.Connection, entity: Entity, body: Json, creating: bool, base: str
) -> dict[str, Any]:
    """The columns a create or update sets; raises the Web API's error for the first mistake."""
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key.endswith("@odata.bind"):
            nav = key.removesuffix("@odata.bind")
            if nav not in entity.binds:
                raise _payload_error(entity, f"An undeclared property '{nav}' which only has "
                                     "property annotations in the payload but no property value "
                                     "was found in the payload. In OData, only declared "
                                     "navigation properties and declared named streams can be "
                                     "represented as properties without values.")  # fmt: skip
            column = entity.binds[nav][0]
            changes[column] = _bind(conn, entity, nav, value, base)
            if column in _TYPE_COLUMN:  # polymorphic lookups also remember the table
                changes[_TYPE_COLUMN[column]] = ENTITIES[entity.binds[nav][1]].logical
            continue
        if "@" in key:
            continue  # instance and property annotations carry no data
        attr = entity.attrs.get(key)
        if attr is None or attr.kind in _LOOKUPS:
            raise _bad("An error occurred while validating input parameters: Microsoft.Crm."
                       f"CrmException: Invalid property '{key}' was found in entity "
                       f"'{entity.type_name}'. ---> Microsoft.OData.ODataException: Does not "
                       "support untyped value in non-open type.")  # fmt: skip
        if attr.create if creating else attr.update:  # other columns are ignored, as Dataverse does
            changes[attr.name] = _checked(entity, attr, value)
    return changes


def _checked(entity: Entity, attr: Attr, value: Any) -> Any:
    text = attr.kind in (STR, MEMO, GUID)
    wrong = (not isinstance(value, str) or (attr.kind == GUID and not _GUID.fullmatch(value))
             if text else not isinstance(value, bool) if attr.kind == BOOL
             else not isinstance(value, int) or isinstance(value, bool))  # fmt: skip
    if value is not None and wrong:
        raise _bad(f"Cannot convert the literal '{value}' to the expected type '{attr.edm}'.")
    if text and attr.length is not None and value is not None and len(value) > attr.length:
        raise _bad(f"A validation error occurred. The length of the '{attr.name}' attribute of "
                   f"the '{entity.logical}' entity exceeded the maximum allowed length of "
                   f"'{attr.length}'.", "0x80044331")  # fmt: skip
    if attr.options and value is not None and value not in dict(attr.options):
        accepted = ",".join(str(v) for v, _ in attr.options)
        raise _bad(f"A validation error occurred. The value {value} of '{attr.name}' on record "
                   f"of type '{entity.logical}' is outside the valid range. Accepted Values: "
                   f"{accepted}", "0x8004431a")  # fmt: skip
    return value.lower() if attr.kind == GUID and value else value


def _case_rules(current: Mapping[str, Any] | None, changes: dict[str, Any]) -> None:
    """Cases resolve only through CloseIncident, and resolved or canceled cases are read-only."""
    state = changes.get("statecode", 0 if current is None else current["statecode"])
    if "statecode" in changes and state == 1:
        raise _bad("This message can not be used to set the state of incident to Resolved. In "
                   "order to set state of incident to Resolved, use the CloseIncidentRequest "
                   "message instead.", "0x80040203")  # fmt: skip
    if current is not None and current["statecode"] != 0 and state != 0:
        raise _bad("This case has already been resolved. Close and reopen the case record to "
                   "see the updates.", "0x80040203")  # fmt: skip
    status = changes.get("statuscode")
    if status is not None and STATE_OF_STATUS[status] != state:
        name = dict(_CASE_STATES)[state]
        message = f"{status} is not a valid status code for state code IncidentState.{name}."
        raise _bad(message, "0x80040203")
    if "statecode" in changes and status is None:
        changes["statuscode"] = DEFAULT_STATUS[state]


# The default published duplicate detection rules the sandbox applies when a write asks for
# them (`MSCRM.SuppressDuplicateDetection: false`): table → columns matched ignoring case.
DUPLICATE_RULES: Mapping[str, tuple[str, ...]] = {
    "account": ("name",),  # "Accounts with the same Account Name"
    "contact": ("emailaddress1",),  # "Contacts with the same e-mail address"
}


def check_duplicates(
    conn: sqlite3.Connection, entity: Entity, current: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
) -> None:  # fmt: skip
    """Refuse a write that sets a rule's column to a value another record already has."""
    own = "" if current is None else current[entity.pk]
    for column in DUPLICATE_RULES.get(entity.logical, ()):
        if not changes.get(column):
            continue
        sql = (f"SELECT 1 FROM {entity.logical} WHERE {column} = ? COLLATE NOCASE "  # noqa: S608 - our column names
               f"AND {entity.pk} != ? LIMIT 1")  # fmt: skip
        if conn.execute(sql, (changes[column], own)).fetchone() is not None:
            raise DynamicsError(500, "0x80040333", "A record was not created or updated because "
                                "a duplicate of the current record already exists.")  # fmt: skip


def _active_inactive_rules(
    entity: Entity, current: Mapping[str, Any] | None, changes: dict[str, Any]
) -> None:
    """Accounts and contacts: status 1 is Active (state 0), status 2 Inactive (state 1)."""
    state = changes.get("statecode", 0 if current is None else current["statecode"])
    status = changes.get("statuscode")
    if status is not None and status - 1 != state:
        name = ("Active", "Inactive")[state]
        message = (f"{status} is not a valid status code for state code "
                   f"{entity.logical.capitalize()}State.{name}.")  # fmt: skip
        raise _bad(message, "0x80040203")
    if "statecode" in changes and status is None:
        changes["statuscode"] = state + 1


def write_row(
    conn: sqlite3.Connection, entity: Entity, current: dict[str, Any] | None,
    changes: dict[str, Any], caller: str, key: tuple[str, str] | str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Create (``current`` None, under ``key`` if given) or update a row; returns it."""
    if entity is INCIDENT:
        _case_rules(current, changes)
    elif "statuscode" in entity.attrs:
        _active_inactive_rules(entity, current, changes)
    if entity is CONTACT and {"firstname", "lastname"} & changes.keys():
        merged = {**(current or {}), **changes}
        names = (merged.get("firstname"), merged.get("lastname"))
        changes["fullname"] = " ".join(n for n in names if n) or None  # "First Last"
    if "ownerid" in changes:
        changes["owninguser"] = changes["ownerid"]
    stamp = {"modifiedon": utc_iso(), "modifiedby": caller,
             "versionnumber": next_id(conn, "versionnumber", 1_000_000)}  # fmt: skip
    if current is not None:
        row = {**current, **changes, **stamp}
        sets = ", ".join(f"{name} = ?" for name in {**changes, **stamp})
        sql = f"UPDATE {entity.logical} SET {sets} WHERE {entity.pk} = ?"  # noqa: S608 - our column names
        conn.execute(sql, (*changes.values(), *stamp.values(), current[entity.pk]))
        return row
    if entity is INCIDENT and not changes.get("customerid"):
        raise _bad("You should specify a parent contact or account.", "0x80040203")
    row = {a.name: None for a in entity.attr_list}
    if isinstance(key, tuple):  # an alternate-key upsert puts the key values in the record
        row[key[0]] = key[1]
    row.update({entity.pk: key if isinstance(key, str) else str(uuid.uuid4()), "ownerid": caller,
                "owninguser": caller, "owningbusinessunit": BUSINESS_UNIT_ID,
                "createdon": stamp["modifiedon"], "createdby": caller})  # fmt: skip
    row.update(entity.defaults)
    if entity is INCIDENT:  # the case number is an autonumber column
        row["ticketnumber"] = _ticket_number(next_id(conn, "ticket", 1200))
    row.update({**changes, **stamp})
    sql = f"INSERT INTO {entity.logical} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"  # noqa: S608 - our column names
    conn.execute(sql, tuple(row.values()))
    return row


def _ticket_number(n: int, suffix: str | None = None) -> str:
    """Case numbers as Dynamics prints them: `CAS-01234-A1B2C3`."""
    digest = hashlib.sha256(str(n).encode()).hexdigest().upper()
    mixed = "".join(digest[i] if i % 2 else chr(65 + int(digest[i], 16)) for i in range(6))
    return f"CAS-{n:05d}-{suffix or mixed}"


# --------------------------------------------------------------------------- tokens


def _client_secret() -> str:
    # Entra client secrets are 40 characters: a 3-character hint, `8Q~`, then random text.
    return secrets.token_urlsafe(3)[:3] + "8Q~" + secrets.token_urlsafe(30)[:34]


@dataclass(frozen=True, slots=True)
class FreshSecrets:
    """Secrets drawn for a brand-new database (and read back from it later)."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_secret: str = field(default_factory=_client_secret)
    signing_key: str = field(default_factory=lambda: secrets.token_hex(32))
    refresh_token: str = field(default_factory=lambda: "0.A" + secrets.token_urlsafe(96))


def mint_token(key: str, claims: Json) -> str:
    """An access token: a JWT like Entra's (HS256 with the sandbox's key instead of RS256)."""
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": "uwf-sandbox"})


def read_token(key: str, token: str) -> Json:
    """The claims of a valid, unexpired token for this org; raises `jwt.InvalidTokenError`."""
    options = {"require": ["exp", "iat", "aud", "oid", "tid"]}
    claims: Json = jwt.decode(token, key, algorithms=["HS256"], audience=ORG_URL, options=options)  # type: ignore[arg-type]
    return claims


def access_claims(fresh: FreshSecrets, oid: str, ttl: float, user: str | None = None) -> Json:
    """Claims of an app-only (client credentials) token or, with ``user``, a delegated one."""
    now = int(time.time())
    claims: Json = {"aud": ORG_URL, "iss": f"https://sts.windows.net/{fresh.tenant_id}/",
                    "iat": now, "nbf": now, "exp": now + int(ttl), "appid": fresh.client_id,
                    "appidacr": "1", "oid": oid, "sub": oid, "tid": fresh.tenant_id,
                    "uti": secrets.token_urlsafe(16), "ver": "1.0"}  # fmt: skip
    if user is None:
        claims["idtyp"] = "app"
    else:
        claims.update(upn=user, unique_name=user, scp="user_impersonation", amr=["pwd"])
    return claims


def make_credentials(fresh: FreshSecrets) -> dict[str, str]:
    """Dev credentials of a new database: app registration, refresh token, long-lived token."""
    ten_years = 10 * 365 * 86400
    dev_token = mint_token(fresh.signing_key, access_claims(fresh, guid("aad", "app"), ten_years))
    return {
        "org_url": ORG_URL,
        "api_path": API,
        "tenant_id": fresh.tenant_id,
        "tenant_domain": TENANT_DOMAIN,
        "client_id": fresh.client_id,
        "client_secret": fresh.client_secret,
        "scope": f"{ORG_URL}/.default",
        "token_path": f"/login/{fresh.tenant_id}/oauth2/v2.0/token",
        "username": ADMIN_EMAIL,
        "refresh_token": fresh.refresh_token,
        "access_token": dev_token,
        "auth": "bearer: Entra ID access token (client_credentials or refresh_token grant)",
    }


# --------------------------------------------------------------------------- seed


def _insert(conn: sqlite3.Connection, entity: Entity, values: Json) -> None:
    row = {a.name: values.get(a.name) for a in entity.attr_list}
    row["versionnumber"] = next_id(conn, "versionnumber", 1_000_000)
    row["modifiedon"] = row["modifiedon"] or row["createdon"]
    sql = f"INSERT INTO {entity.logical} VALUES ({', '.join('?' * len(row))})"  # noqa: S608 - our table names
    conn.execute(sql, tuple(row.values()))


def seed(fresh: FreshSecrets, conn: sqlite3.Connection) -> None:
    """Users, accounts and 60 cases whose fields follow from their number (docs/crms)."""
    set_meta(conn, "token_signing_key", fresh.signing_key)
    admin, now = guid("systemuser", "admin"), time.time()
    stamp = {"createdon": utc_iso(_SEED_EPOCH), "createdby": admin, "ownerid": admin,
             "owninguser": admin, "owningbusinessunit": BUSINESS_UNIT_ID}  # fmt: skip
    app = ("app", "#", "UWF Integration", "uwf-integration@uwf-sandbox.test", False)
    for key, first, last, email, disabled in (*USERS, app):
        _insert(conn, SYSTEMUSER, {**stamp, "systemuserid": guid("systemuser", key),
            "fullname": f"{first} {last}", "firstname": first, "lastname": last,
            "internalemailaddress": email, "domainname": email, "isdisabled": int(disabled),
            "accessmode": 4 if key == "app" else 0, "businessunitid": BUSINESS_UNIT_ID,
            "applicationid": fresh.client_id if key == "app" else None,
            "azureactivedirectoryobjectid": guid("aad", key)})  # fmt: skip
    for n, (name, phone, web, industry, country) in enumerate(ACCOUNTS):
        _insert(conn, ACCOUNT, {**stamp, "accountid": guid("account", n), "name": name,
            "accountnumber": f"ACC-{1001 + n}", "telephone1": phone, "websiteurl": web,
            "industrycode": industry, "address1_country": country, "statecode": 0,
            "statuscode": 1, "description": f"{name}, a customer since 2024."})  # fmt: skip
    conn.execute("INSERT INTO refresh_token VALUES (?, ?, ?, ?, ?)",
                 (fresh.refresh_token, fresh.client_id, guid("aad", "admin"), now,
                  now + 90 * 86400))  # fmt: skip
    agents = [guid("systemuser", k) for k in ("alice", "bob", "carol", "admin")]
    for n in range(1, 61):
        quick, created, case = n == 23, _SEED_EPOCH + n * 3600, guid("incident", n)
        state, status = (2, 6) if n % 15 == 0 else (1, 5) if n % 10 == 0 else (0, 1 + n % 4)
        owner = admin if quick else agents[n % 4]
        _insert(conn, INCIDENT, {**stamp, "incidentid": case, "title": f"{TOPICS[n % 8]} #{n}",
            "description": f"Customer reports: {TOPICS[n % 8].lower()}. Seed case {n}.",
            "ticketnumber": _ticket_number(1100 + n, "X1Y2Z3" if quick else None),
            "prioritycode": 2 if quick else 1 + n % 3, "casetypecode": 1 + n % 3,
            "caseorigincode": 1 + n % 3, "statecode": 0 if quick else state,
            "statuscode": 1 if quick else status, "isescalated": 0, "ownerid": owner,
            "owninguser": owner, "customerid": guid("account", n % 5), "customeridtype": "account",
            "createdon": utc_iso(created), "modifiedon": utc_iso(created + 600)})  # fmt: skip
        if n % 3 == 0:
            _insert(conn, ANNOTATION, {**stamp, "annotationid": guid("annotation", n),
                "subject": "Call summary", "isdocument": 0, "objectid": case,
                "notetext": "Called the customer and collected the details.",
                "objecttypecode": "incident", "ownerid": owner, "owninguser": owner,
                "createdby": owner, "createdon": utc_iso(created + 900)})  # fmt: skip
    for n, (first, last, email, title, mobile, company) in enumerate(CONTACTS):
        _insert(conn, CONTACT, {**stamp, "contactid": guid("contact", n), "firstname": first,
            "lastname": last, "fullname": f"{first} {last}", "emailaddress1": email,
            "telephone1": ACCOUNTS[company][1], "mobilephone": mobile, "jobtitle": title,
            "parentcustomerid": guid("account", company), "parentcustomeridtype": "account",
            "statecode": 0, "statuscode": 1,
            "createdon": utc_iso(_SEED_EPOCH + 86400 + n * 60)})  # fmt: skip
