"""ServiceNow sandbox records: tables, seed data, JSON shapes, business rules, credentials.

Everything here works on a `sqlite3.Connection` inside one `SandboxStore` unit of work and knows
nothing of HTTP; `servicenow` holds the routes. Records are stored the way the Table API shows
them: one JSON object of strings per record, whatever the field's type. Helpers raise
`SnowError` (ServiceNow's own ``{"error": {...}, "status": "failure"}`` body) so a route can let
them propagate to the error handler unchanged.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from uwf.sandboxes._common import Json, utc_iso
from uwf.sandboxes._store import get_meta, next_id, set_meta

INSTANCE = "uwf-sandbox"
ADMIN_USER = "admin"
ADMIN_SYS_ID = "6816f79cc0a8016401c5a33be04be441"  # the baseline admin's sys_id on every instance
QUICKSTART_NUMBER = "INC0010123"
RATE_RULE_SYS_ID = "a4c1e9b0dbe02300c8a7f3b5ca96190f"  # the seeded sys_rate_limit_rules record
DEFAULT_TOKEN_TTL = 1800  # "Access Token Lifespan" of a new OAuth application registry entry
REFRESH_TOKEN_TTL = 100 * 86400  # "Refresh Token Lifespan": 8,640,000 s
_DEV_TOKEN_TTL = 10 * 365 * 86400  # the dev tokens in `credentials()` must outlive any test run
_SEED_EPOCH = 1704067200  # 2024-01-01 00:00:00 UTC: seeded timestamps never change

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, sys_id TEXT NOT NULL,
    data TEXT NOT NULL, UNIQUE (tbl, sys_id));
CREATE INDEX IF NOT EXISTS records_by_table ON records (tbl, seq);
CREATE TABLE IF NOT EXISTS user_passwords (user_name TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, client_id TEXT NOT NULL,
    user_sys_id TEXT NOT NULL, grant_type TEXT NOT NULL, expires_at REAL NOT NULL);
"""


class SnowError(Exception):
    """A response in ServiceNow's error format, raised from anywhere in a handler."""

    def __init__(self, status: int, body: Json, headers: Mapping[str, str] | None = None):
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def failure(
    status: int, message: str, detail: str | None, headers: Mapping[str, str] | None = None
) -> SnowError:
    """ServiceNow's REST error: ``{"error": {"message", "detail"}, "status": "failure"}``."""
    return SnowError(
        status, {"error": {"message": message, "detail": detail}, "status": "failure"}, headers
    )


def no_record() -> SnowError:
    """The 404 for an unknown sys_id (shared/crm-specs fixture ``{sys_id}/404.json``)."""
    detail = "Record doesn't exist or ACL restricts the record retrieval"
    return failure(404, "No Record found", detail)


# --------------------------------------------------------------------------- tables

_LABELS = {
    "sys_id": "Sys ID", "sys_created_on": "Created", "sys_updated_on": "Updated",
    "sys_created_by": "Created by", "sys_updated_by": "Updated by", "sys_mod_count": "Updates",
    "sys_class_name": "Class", "sys_domain": "Domain", "sys_domain_path": "Domain Path",
    "close_code": "Resolution code", "close_notes": "Resolution notes", "caller_id": "Caller",
    "cmdb_ci": "Configuration item", "comments": "Additional comments", "user_name": "User ID",
    "problem_id": "Problem", "rfc": "Change Request", "work_notes": "Work notes",
    "u_uwf_key": "UWF key",
}  # fmt: skip
_SYS = (
    "sys_created_on:glide_date_time sys_created_by:string sys_updated_on:glide_date_time "
    "sys_updated_by:string sys_mod_count:integer sys_tags:string"
)
_USER = (
    """
    sys_id:GUID user_name:string name:string first_name:string middle_name:string
    last_name:string email:email title:string department:reference>cmn_department
    company:reference>core_company location:reference>cmn_location manager:reference>sys_user
    phone:ph_number mobile_phone:ph_number home_phone:ph_number street:string city:string
    state:string zip:string country:string active:boolean locked_out:boolean
    web_service_access_only:boolean internal_integration_user:boolean vip:boolean
    notification:integer time_zone:string roles:user_roles employee_number:string
    source:string sys_class_name:sys_class_name sys_domain:domain_id>sys_user_group
    sys_domain_path:domain_path """
    + _SYS
)
# `name:type` or `name:type>table`; the incident's set is exactly the one of the POST fixture.
_TABLE_FIELDS = {
    "incident": """
        parent:reference>task made_sla:boolean caused_by:reference>change_request
        watch_list:glide_list upon_reject:string child_incidents:integer hold_reason:integer
        origin_table:table_name task_effective_number:string approval_history:journal
        number:string resolved_by:reference>sys_user opened_by:reference>sys_user
        user_input:user_input sys_domain:domain_id>sys_user_group state:integer
        route_reason:integer knowledge:boolean order:integer calendar_stc:integer
        closed_at:glide_date_time cmdb_ci:reference>cmdb_ci
        delivery_plan:reference>sc_cat_item_delivery_plan contract:reference>ast_contract
        impact:integer active:boolean work_notes_list:glide_list
        business_service:reference>cmdb_ci_service business_impact:html priority:integer
        sys_domain_path:domain_path rfc:reference>change_request time_worked:timer
        expected_start:glide_date_time opened_at:glide_date_time business_duration:glide_duration
        group_list:glide_list work_end:glide_date_time caller_id:reference>sys_user
        reopened_time:glide_date_time resolved_at:glide_date_time approval_set:glide_date_time
        subcategory:string work_notes:journal_input universal_request:reference>task
        short_description:string close_code:string correlation_display:string
        delivery_task:reference>sc_task work_start:glide_date_time
        assignment_group:reference>sys_user_group additional_assignee_list:glide_list
        business_stc:integer cause:string description:string origin_id:document_id
        calendar_duration:glide_duration close_notes:string notify:integer
        service_offering:reference>service_offering sys_class_name:sys_class_name
        closed_by:reference>sys_user follow_up:glide_date_time parent_incident:reference>incident
        sys_id:GUID contact_type:string reopened_by:reference>sys_user incident_state:integer
        urgency:integer problem_id:reference>problem company:reference>core_company
        reassignment_count:integer activity_due:due_date assigned_to:reference>sys_user
        severity:integer comments:journal_input approval:string sla_due:due_date
        comments_and_work_notes:journal_list due_date:due_date reopen_count:integer
        escalation:integer upon_approval:string correlation_id:string
        location:reference>cmn_location category:string """
    + _SYS,
    "sys_user": _USER,
    # A contact (Customer Service) extends sys_user: its own columns come after the user's.
    "customer_contact": _USER
    + """ account:reference>customer_account agent_status:string u_uwf_key:string""",
    # Company [core_company]; u_uwf_key is the custom column UWF's creates mark records with.
    "core_company": """
        sys_id:GUID name:string street:string city:string state:string zip:string
        country:string phone:ph_number fax_phone:ph_number website:url notes:string
        parent:reference>core_company contact:reference>sys_user num_employees:integer
        customer:boolean vendor:boolean manufacturer:boolean primary:boolean
        publicly_traded:boolean stock_symbol:string stock_price:string market_cap:currency
        revenue_per_year:currency profits:currency fiscal_year:glide_date latitude:float
        longitude:float lat_long_error:string discount:decimal rank_tier:string
        registration_code:string vendor_manager:glide_list vendor_type:glide_list
        theme:reference>sys_ui_theme banner_text:translated_html sys_class_name:sys_class_name
        u_uwf_key:string """
    + _SYS,
    "sys_user_group": """
        sys_id:GUID name:string description:string email:email manager:reference>sys_user
        active:boolean type:glide_list """
    + _SYS,
    "sys_journal_field": """
        sys_id:GUID element:string element_id:GUID name:table_name value:string
        sys_created_on:glide_date_time sys_created_by:string sys_tags:string""",
    "sys_dictionary": """
        sys_id:GUID name:table_name element:string column_label:string
        internal_type:reference>sys_glide_object max_length:integer mandatory:boolean
        read_only:boolean active:boolean reference:reference>sys_db_object choice:integer
        default_value:string display:boolean """
    + _SYS,
    "sys_choice": """
        sys_id:GUID name:table_name element:string value:string label:string sequence:integer
        inactive:boolean language:string dependent_value:string """
    + _SYS,
}
_STATES = (("1", "New"), ("2", "In Progress"), ("3", "On Hold"), ("6", "Resolved"),
           ("7", "Closed"), ("8", "Canceled"))  # fmt: skip
_LEVELS = (("1", "1 - High"), ("2", "2 - Medium"), ("3", "3 - Low"))
CHOICES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "incident": {
        "state": _STATES, "incident_state": _STATES, "impact": _LEVELS, "urgency": _LEVELS,
        "severity": _LEVELS,
        "priority": (("1", "1 - Critical"), ("2", "2 - High"), ("3", "3 - Moderate"),
                     ("4", "4 - Low"), ("5", "5 - Planning")),
        "category": (("inquiry", "Inquiry / Help"), ("software", "Software"),
                     ("hardware", "Hardware"), ("network", "Network"), ("database", "Database")),
        "close_code": tuple((c, c) for c in (
            "Duplicate", "Known error", "No resolution provided", "Resolved by caller",
            "Resolved by change", "Resolved by problem", "Solution provided",
            "Workaround provided", "User error")),
        "contact_type": (("email", "Email"), ("phone", "Phone"),
                         ("self-service", "Self-service"), ("walk-in", "Walk-in")),
        "hold_reason": (("1", "Awaiting Caller"), ("3", "Awaiting Problem"),
                        ("4", "Awaiting Vendor"), ("5", "Awaiting Change")),
        "notify": (("1", "Do Not Notify"), ("2", "Send Email")),
        "approval": (("not requested", "Not Yet Requested"), ("requested", "Requested"),
                     ("approved", "Approved"), ("rejected", "Rejected")),
    },
    "core_company": {
        "rank_tier": (("strategic", "Strategic"), ("tactical", "Tactical"),
                      ("valued", "Valued"), ("other", "Other"), ("blacklist", "Blacklist")),
    },
}  # fmt: skip
# Baseline "Priority Lookup Rules" (dl_u_priority): (impact, urgency) -> priority.
PRIORITY_MATRIX = {(i, u): str(min(5, int(i) + int(u) - 1)) for i in "123" for u in "123"}
_DISPLAY_FIELD = {"incident": "number", "sys_user": "name", "sys_user_group": "name",
                  "sys_choice": "label", "sys_dictionary": "column_label",
                  "core_company": "name", "customer_contact": "name"}  # fmt: skip
# Table inheritance: a child's records are also its parent's (a contact is a sys_user), and
# a reference to a table the sandbox does not serve is looked up in the one it extends.
EXTENDS = {"customer_contact": "sys_user"}
_STORED_AS = {"task": "incident", "customer_account": "core_company"}


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One column of a table, as sys_dictionary describes it."""

    name: str
    internal_type: str
    target: str | None

    @property
    def label(self) -> str:
        return _LABELS.get(self.name) or self.name.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True)
class TableDef:
    """A table the sandbox serves: its fields in order, and choices by field."""

    name: str
    fields: dict[str, FieldDef]
    choices: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def blank(self) -> dict[str, str]:
        return dict.fromkeys(self.fields, "")


def _table(name: str, spec: str) -> TableDef:
    fields: dict[str, FieldDef] = {}
    for token in spec.split():
        fname, _, kind = token.partition(":")
        kind, _, target = kind.partition(">")
        fields[fname] = FieldDef(fname, kind, target or None)
    choices = {**CHOICES.get(EXTENDS.get(name, ""), {}), **CHOICES.get(name, {})}
    return TableDef(name, fields, choices)


TABLES = {name: _table(name, spec) for name, spec in _TABLE_FIELDS.items()}


def family(table: str) -> tuple[str, ...]:
    """``table`` and the tables extending it: whose records a query on ``table`` sees."""
    return (table, *(child for child, parent in EXTENDS.items() if parent == table))


def lineage(table: str) -> tuple[str, ...]:
    """``table`` and the tables it extends, nearest first."""
    return (table, *lineage(EXTENDS[table])) if table in EXTENDS else (table,)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user a request acts as."""

    sys_id: str
    user_name: str
    name: str


# --------------------------------------------------------------------------- storage


# A table and those extending it, as one JSON-array parameter: `tbl IN (SELECT ...)`.
_FAMILY = "tbl IN (SELECT value FROM json_each(?))"


def rows(conn: sqlite3.Connection, table: str) -> list[dict[str, str]]:
    """Every record of ``table`` (and of the tables extending it), oldest first."""
    sql = f"SELECT data FROM records WHERE {_FAMILY} ORDER BY seq"  # noqa: S608 - constant
    found = conn.execute(sql, (json.dumps(family(table)),))
    return [json.loads(r[0]) for r in found]


def get_record(conn: sqlite3.Connection, table: str, sys_id: str) -> dict[str, str] | None:
    """One record of ``table`` (or of a table extending it) by sys_id, or None."""
    sql = f"SELECT data FROM records WHERE {_FAMILY} AND sys_id = ?"  # noqa: S608 - constant
    row = conn.execute(sql, (json.dumps(family(table)), sys_id)).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def delete_record(conn: sqlite3.Connection, table: str, sys_id: str) -> None:
    """Remove a record of ``table`` (or of a table extending it)."""
    sql = f"DELETE FROM records WHERE {_FAMILY} AND sys_id = ?"  # noqa: S608 - constant
    conn.execute(sql, (json.dumps(family(table)), sys_id))


def _put(conn: sqlite3.Connection, table: str, record: Mapping[str, str]) -> None:
    # A record keeps its own class: a contact updated through sys_user stays a contact.
    stored = record.get("sys_class_name", "")
    conn.execute(
        "INSERT INTO records (tbl, sys_id, data) VALUES (?, ?, ?) "
        "ON CONFLICT(tbl, sys_id) DO UPDATE SET data = excluded.data",
        (stored if stored in family(table) else table, record["sys_id"], json.dumps(record)),
    )


def snow_time(ts: float | None = None) -> str:
    """A glide_date_time as the Table API returns it: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def hash_password(password: str) -> str:
    """Passwords are kept as digests, as ServiceNow's password2 fields never store plain text."""
    return hashlib.sha256(password.encode()).hexdigest()


def field_value(
    conn: sqlite3.Connection, table: TableDef, record: Mapping[str, str], path: str
) -> str:
    """A field's value; ``ref.field`` dot-walks one reference."""
    name, _, rest = path.partition(".")
    value = record.get(name, "")
    definition = table.fields.get(name)
    if not rest or not value or definition is None or definition.target is None:
        return value if not rest else ""
    target = _STORED_AS.get(definition.target, definition.target)
    referenced = get_record(conn, target, value) if target in TABLES else None
    return "" if referenced is None else referenced.get(rest, "")


# --------------------------------------------------------------------------- JSON shapes


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How ``sysparm_display_value`` / ``sysparm_exclude_reference_link`` shape a record."""

    base: str
    display: str = "false"  # "false" | "true" | "all"
    exclude_links: bool = False
    fields: tuple[str, ...] = ()


def field_list(text: str) -> tuple[str, ...]:
    """``sysparm_fields`` as a tuple of names, blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _display(conn: sqlite3.Connection, definition: FieldDef, value: str) -> str:
    if not value or definition.target is None:
        return value
    target = _STORED_AS.get(definition.target, definition.target)
    record = get_record(conn, target, value) if target in TABLES else None
    return value if record is None else record.get(_DISPLAY_FIELD.get(target, "sys_id"), value)


_JOURNAL_SQL = (
    "SELECT json_extract(j.data, '$.element'), json_extract(j.data, '$.sys_created_on'), "
    "coalesce(json_extract(u.data, '$.name'), json_extract(j.data, '$.sys_created_by')), "
    "json_extract(j.data, '$.value') FROM records j LEFT JOIN records u ON u.tbl = 'sys_user' "
    "AND json_extract(u.data, '$.user_name') = json_extract(j.data, '$.sys_created_by') "
    "WHERE j.tbl = 'sys_journal_field' AND json_extract(j.data, '$.element_id') = ? "
    "ORDER BY j.seq DESC"
)


def _journal(conn: sqlite3.Connection, table: TableDef, sys_id: str, name: str) -> str:
    """The display value of a journal field: its entries, newest first."""
    elements = ("comments", "work_notes") if name == "comments_and_work_notes" else (name,)
    return "".join(
        f"{at} - {who} ({table.fields[element].label})\n{text}\n\n"
        for element, at, who, text in conn.execute(_JOURNAL_SQL, (sys_id,))
        if element in elements
    )


def render(
    conn: sqlite3.Connection, table: TableDef, record: Mapping[str, str], options: RenderOptions
) -> Json:
    """A stored record as the Table API returns it (every value a string or an object)."""
    out: Json = {}
    for name in options.fields or tuple(table.fields):
        definition = table.fields.get(name.split(".")[0])
        if definition is None:
            continue  # ServiceNow leaves unknown names out of sysparm_fields' answer
        if "." in name:
            out[name] = field_value(conn, table, record, name)
            continue
        raw = record.get(name, "")
        if definition.internal_type in ("journal_input", "journal_list"):
            # Journal fields are write-only on the record: their text lives in
            # sys_journal_field, and only display values show it.
            raw, shown = "", _journal(conn, table, record["sys_id"], name)
        elif name in table.choices:
            shown = dict(table.choices[name]).get(raw, raw)
        else:
            shown = _display(conn, definition, raw)
        out[name] = _shape(definition, raw, shown, options)
    return out


def _shape(definition: FieldDef, raw: str, shown: str, options: RenderOptions) -> Any:
    link = None
    if definition.target is not None and raw and not options.exclude_links:
        link = f"{options.base}/api/now/table/{definition.target}/{raw}"
    if options.display == "true":
        return shown if link is None else {"display_value": shown, "link": link}
    if options.display == "all":
        return {"display_value": shown, "value": raw, **({"link": link} if link else {})}
    return raw if link is None else {"link": link, "value": raw}


# --------------------------------------------------------------------------- writes


def _stringify(value: Any) -> str:
    """Table API inputs become strings; a ``{link, value}`` echoed back counts as its value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:
        return _stringify(value["value"])
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def new_sys_id() -> str:
    """A fresh 32-hex-digit sys_id, as ServiceNow's GUIDs look."""
    return secrets.token_hex(16)


def _fresh(table: str, at: str, by: str, **values: str) -> dict[str, str]:
    """A new record of ``table``: blank fields, the server's system fields, then ``values``."""
    system = {"sys_created_on": at, "sys_created_by": by, "sys_updated_on": at,
              "sys_updated_by": by, "sys_mod_count": "0", "sys_class_name": table,
              "sys_domain": "global", "sys_domain_path": "/"}  # fmt: skip
    blank = TABLES[table].blank()
    return {**blank, **{k: v for k, v in system.items() if k in blank}, **values}


def _journal_entry(
    conn: sqlite3.Connection, record: Mapping[str, str], element: str, text: str, by: str, at: str
) -> None:
    entry = _fresh("sys_journal_field", at, by, sys_id=new_sys_id(), element=element,
                   element_id=record["sys_id"], name="incident", value=text)  # fmt: skip
    _put(conn, "sys_journal_field", entry)


def _data_policy_exception(labels: list[str]) -> SnowError:
    detail = "Data Policy Exception: The following fields are mandatory: " + ", ".join(labels)
    return failure(403, "Operation Failed", detail)


# Data policies of the sandbox instance (an administrator's, not baseline): like every data
# policy they hold for REST writes too, where dictionary `mandatory` flags alone do not.
_DATA_POLICIES = {"core_company": ("name",)}
# Unique indexes, each over its table and the tables extending it. user_name is unique on
# sys_user; u_uwf_key, UWF's marker column, is declared unique where it is added.
_UNIQUE = {"sys_user": ("user_name",), "core_company": ("u_uwf_key",),
           "customer_contact": ("u_uwf_key",)}  # fmt: skip


def _common_rules(conn: sqlite3.Connection, table: TableDef, record: dict[str, str],
                  inserting: bool) -> None:  # fmt: skip
    """Calculated names, data policies and unique indexes: what any table's write runs."""
    if "sys_user" in lineage(table.name):
        # sys_user.name is calculated from the name parts (contacts inherit it).
        parts = [record[f] for f in ("first_name", "middle_name", "last_name") if record.get(f)]
        record["name"] = " ".join(parts) if parts else record["name"]
    missing = [table.fields[f].label for f in _DATA_POLICIES.get(table.name, ())
               if not record[f].strip()]  # fmt: skip
    if missing:
        raise _data_policy_exception(missing)
    for owner in lineage(table.name):
        for column in _UNIQUE.get(owner, ()):
            value = record.get(column, "").casefold()
            if value and any(other["sys_id"] != record["sys_id"]
                             and other.get(column, "").casefold() == value
                             for other in rows(conn, owner)):  # fmt: skip
                # A unique-index violation aborts the write; the detail names the record.
                shown = record.get(_DISPLAY_FIELD.get(table.name, "sys_id")) or record["sys_id"]
                verb = "insert" if inserting else "update"
                detail = f"Error during {verb} of {table.name} ({shown})"
                raise failure(403, "Operation Failed", detail)


def _incident_rules(record: dict[str, str], before: Mapping[str, str], by: Caller, at: str) -> None:
    """The baseline business rules and data policy the incident table runs on every write."""
    if record["state"] != before.get("state"):
        record["incident_state"] = record["state"]
    elif record["incident_state"] != before.get("incident_state"):
        record["state"] = record["incident_state"]
    # Priority is computed from impact and urgency (Priority Lookup Rules); a priority
    # written directly is overwritten, as on a real instance.
    impact_urgency = (record["impact"], record["urgency"])
    record["priority"] = PRIORITY_MATRIX.get(impact_urgency, record["priority"])
    closing = record["state"] in ("6", "7")
    missing = [_LABELS[f] for f in ("close_code", "close_notes") if closing and not record[f]]
    if missing:  # the baseline data policy "Make close info mandatory when resolved or closed"
        raise _data_policy_exception(missing)
    if closing and not record["resolved_at"]:
        record["resolved_at"], record["resolved_by"] = at, by.sys_id
    if record["state"] == "7" and not record["closed_at"]:
        record["closed_at"], record["closed_by"] = at, by.sys_id
    record["active"] = "false" if record["state"] in ("7", "8") else "true"
    if record["assignment_group"] != before.get("assignment_group", record["assignment_group"]):
        record["reassignment_count"] = str(int(record["reassignment_count"] or 0) + 1)


_INCIDENT_DEFAULTS = {
    "made_sla": "true", "upon_reject": "cancel", "child_incidents": "0", "state": "1",
    "knowledge": "false", "impact": "3", "active": "true", "priority": "5", "notify": "1",
    "incident_state": "1", "urgency": "3", "reassignment_count": "0", "severity": "3",
    "approval": "not requested", "reopen_count": "0", "escalation": "0",
    "upon_approval": "proceed", "category": "inquiry",
}  # fmt: skip
_USER_DEFAULTS = {
    "active": "true", "locked_out": "false", "web_service_access_only": "false", "vip": "false",
    "internal_integration_user": "false", "notification": "2",
}  # fmt: skip
_DEFAULTS: dict[str, dict[str, str]] = {
    "incident": _INCIDENT_DEFAULTS,
    "sys_user": _USER_DEFAULTS,
    "customer_contact": _USER_DEFAULTS,
    "core_company": dict.fromkeys(("customer", "vendor", "manufacturer", "primary"), "false"),
}
_SERVER_FIELDS = frozenset({"sys_created_on", "sys_created_by", "sys_updated_on",
                            "sys_updated_by", "sys_mod_count", "sys_class_name"})  # fmt: skip


def write_record(
    conn: sqlite3.Connection,
    table: TableDef,
    current: Mapping[str, str] | None,
    body: Mapping[str, Any],
    caller: Caller,
    at: str | None = None,
) -> dict[str, str]:
    """Insert (``current`` None) or update a record from a request body; returns it stored.

    Unknown fields are ignored and system fields are the server's, as in ServiceNow; journal
    fields (work_notes, comments) append to sys_journal_field instead of being stored.
    """
    at = at or snow_time()
    changes = {k: _stringify(v) for k, v in body.items()
               if k in table.fields and k not in _SERVER_FIELDS}  # fmt: skip
    journal = [(k, changes.pop(k)) for k in list(changes)
               if table.fields[k].internal_type == "journal_input"]  # fmt: skip
    if current is None:
        defaults = dict(_DEFAULTS.get(table.name, {}))
        if table.name == "incident":
            number = f"INC{next_id(conn, 'incident_number', 10161):07d}"
            defaults.update(number=number, task_effective_number=number,
                            opened_by=caller.sys_id, opened_at=at)  # fmt: skip
        record = _fresh(table.name, at, caller.user_name, **{**defaults, **changes})
        record["sys_id"] = record["sys_id"] or new_sys_id()
    else:
        record = {**current, **changes, "sys_id": current["sys_id"]}
        if "sys_mod_count" in record:
            count = str(int(record["sys_mod_count"] or 0) + 1)
            record.update(sys_updated_on=at, sys_updated_by=caller.user_name, sys_mod_count=count)
    if table.name == "incident":
        _incident_rules(record, current or {}, caller, at)
    _common_rules(conn, table, record, current is None)
    _put(conn, table.name, record)
    for element, text in journal:
        if text.strip():
            _journal_entry(conn, record, element, text, caller.user_name, at)
    return record


# --------------------------------------------------------------------------- seed

AGENTS = (  # (user_name, first, last, email)
    ("alice.agent", "Alice", "Agent", "alice@acme.test"),
    ("bob.agent", "Bob", "Agent", "bob@acme.test"),
    ("carol.agent", "Carol", "Agent", "carol@acme.test"),
)
_CALLERS = tuple((f"{n.lower()}.customer", n, "Customer", f"{n.lower()}@customer.test")
                 for n in ("Dave", "Erin", "Frank", "Grace", "Heidi"))  # fmt: skip
_GROUPS = ("Service Desk", "Network", "Database")
_TOPICS = (  # (short description, category)
    ("Printer is offline", "hardware"), ("Cannot log in to VPN", "network"),
    ("Email not syncing on phone", "software"), ("Laptop battery swollen", "hardware"),
    ("Database backup job failed", "database"), ("Password reset request", "inquiry"),
    ("Payroll report shows error 500", "software"), ("Wi-Fi drops in building B", "network"),
)  # fmt: skip
COMPANIES = (  # (name, country, city, phone, website, notes)
    ("Initrode Ltd", "United Kingdom", "London", "+44 20 7946 0100", "https://initrode.test",
     "Managed print and desktop support since 2019."),
    ("Penetrode Inc", "USA", "Austin", "+1 512 555 0142", "https://penetrode.test",
     "Network operations; 24x7 contract."),
    ("Vandelay Industries", "USA", "New York", "+1 212 555 0199", "https://vandelay.test",
     "Importer and exporter; VIP escalations go to the account manager."),
    ("Globochem GmbH", "Germany", "Hamburg", "+49 40 5555 0123", "https://globochem.test", ""),
)  # fmt: skip
CONTACTS = (  # (company, first, last, email, title, phone, mobile)
    ("Initrode Ltd", "Peter", "Gibbons", "peter.gibbons@initrode.test", "Programmer",
     "+44 20 7946 0101", "+44 7700 900101"),
    ("Initrode Ltd", "Joanna", "Lumbergh", "joanna.lumbergh@initrode.test", "IT Manager",
     "+44 20 7946 0102", ""),
    ("Penetrode Inc", "Samir", "Nagheenanajar", "samir@penetrode.test", "Network Engineer",
     "+1 512 555 0143", "+1 512 555 0144"),
    ("Vandelay Industries", "Art", "Vandelay", "art@vandelay.test", "CEO",
     "+1 212 555 0100", "+1 917 555 0100"),
    ("Vandelay Industries", "George", "Costanza", "george.costanza@vandelay.test",
     "Latex Salesman", "+1 212 555 0101", ""),
    ("Globochem GmbH", "Greta", "Schmidt", "greta.schmidt@globochem.test", "Head of IT",
     "+49 40 5555 0124", "+49 151 5555 0124"),
)  # fmt: skip
# Mandatory in the dictionary (a flag forms enforce; REST writes only meet data policies).
_MANDATORY = {("incident", "short_description"), ("core_company", "name")}
_DROPDOWN_WITHOUT_NONE = ("state", "incident_state", "impact", "urgency", "priority")


def _sys_id(*key: object) -> str:
    return hashlib.sha256(":".join(map(str, key)).encode()).hexdigest()[:32]


def make_credentials() -> dict[str, str]:
    """Fresh dev credentials for a new database: the admin's password, an OAuth client and a
    long-lived refresh and access token for it."""
    return {
        "instance": INSTANCE,
        "username": ADMIN_USER,
        "password": secrets.token_urlsafe(18),
        "client_id": secrets.token_hex(16),
        "client_secret": secrets.token_urlsafe(24),
        "refresh_token": secrets.token_urlsafe(64),
        "access_token": secrets.token_urlsafe(64),
        "token_url_path": "/oauth_token.do",
        "auth": "basic username:password, bearer access_token, or OAuth at /oauth_token.do",
    }


def _seed_people(conn: sqlite3.Connection, at: str) -> None:
    people = [(ADMIN_USER, "System", "Administrator", "admin@example.com"), *AGENTS, *_CALLERS,
              ("olivia.former", "Olivia", "Former", "olivia@acme.test")]  # fmt: skip
    for user_name, first, last, email in people:
        flags = dict.fromkeys(("locked_out", "web_service_access_only", "vip",
                               "internal_integration_user"), "false")  # fmt: skip
        user = _fresh(
            "sys_user", at, "system", **flags, user_name=user_name, name=f"{first} {last}",
            first_name=first, last_name=last, email=email, notification="2", time_zone="UTC",
            sys_id=ADMIN_SYS_ID if user_name == ADMIN_USER else _sys_id("sys_user", user_name),
            roles="admin" if user_name == ADMIN_USER else "itil" if "agent" in user_name else "",
            active="false" if user_name == "olivia.former" else "true",
        )  # fmt: skip
        _put(conn, "sys_user", user)
    for group in _GROUPS:
        values = {"sys_id": _sys_id("sys_user_group", group), "name": group, "active": "true"}
        _put(conn, "sys_user_group", _fresh("sys_user_group", at, "system", **values))


def _seed_incidents(conn: sqlite3.Connection) -> None:
    admin = Caller(ADMIN_SYS_ID, ADMIN_USER, "System Administrator")
    callers, agents = [c[0] for c in _CALLERS], [a[0] for a in AGENTS]
    for i in range(101, 161):
        at = snow_time(_SEED_EPOCH + i * 3600)
        state = ("1", "2", "2", "1", "3", "6", "2", "1", "7", "8")[i % 10]
        topic, category = _TOPICS[i % len(_TOPICS)]
        agent = "" if state == "1" or i % 4 == 0 else agents[i % len(agents)]
        body: Json = {
            "sys_id": _sys_id("incident", i), "short_description": f"{topic} ({i})",
            "description": f"Details for seeded incident {i}: {topic.lower()}.",
            "category": category, "state": state, "contact_type": "email",
            "caller_id": _sys_id("sys_user", callers[i % len(callers)]),
            "impact": str(1 + i % 3), "urgency": str(1 + (i // 3) % 3),
            "assignment_group": _sys_id("sys_user_group", _GROUPS[i % len(_GROUPS)]),
            "assigned_to": _sys_id("sys_user", agent) if agent else "",
        }  # fmt: skip
        if state in ("6", "7"):
            body.update(close_code="Solution provided", close_notes="Fixed; caller confirmed.")
        if f"INC{10000 + i:07d}" == QUICKSTART_NUMBER:
            body.update(impact="2", urgency="2", assigned_to="")  # new, 3 - Moderate, no owner
        # Numbers follow the seed's index: INC0010101 .. INC0010160.
        sequence = "INSERT OR REPLACE INTO sandbox_sequences VALUES ('incident_number', ?)"
        conn.execute(sequence, (10000 + i - 1,))
        record = write_record(conn, TABLES["incident"], None, body, admin, at)
        _journal_entry(conn, record, "comments", body["description"], callers[i % 5], at)
        if state == "2" and agent:
            later = snow_time(_SEED_EPOCH + i * 3600 + 600)
            _journal_entry(
                conn, record, "work_notes", "Investigating with the caller.", agent, later
            )


def _seed_dictionary(conn: sqlite3.Connection, at: str) -> None:
    for table in ("incident", "sys_user", "sys_user_group", "core_company", "customer_contact"):
        definition = TABLES[table]
        inherited = TABLES[EXTENDS[table]].fields if table in EXTENDS else {}
        for name, fdef in definition.fields.items():
            if name in inherited:
                continue  # the dictionary keeps a column once, on the table that defines it
            choices = CHOICES.get(table, {}).get(name, ())
            is_display = _DISPLAY_FIELD.get(table) == name
            _put(conn, "sys_dictionary", _fresh(
                "sys_dictionary", at, "system", sys_id=_sys_id("sys_dictionary", table, name),
                name=table, element=name, column_label=fdef.label, active="true",
                internal_type=fdef.internal_type, reference=fdef.target or "",
                max_length="4000" if name in ("description", "close_notes", "notes") else "40",
                mandatory=str((table, name) in _MANDATORY).lower(),
                read_only=str(name.startswith("sys_")).lower(), display=str(is_display).lower(),
                choice="3" if name in _DROPDOWN_WITHOUT_NONE else "1" if choices else "0",
                default_value=_DEFAULTS.get(table, {}).get(name, ""),
            ))  # fmt: skip
            for n, (value, label) in enumerate(choices):
                _put(conn, "sys_choice", _fresh(
                    "sys_choice", at, "system", sys_id=_sys_id("sys_choice", table, name, value),
                    name=table, element=name, value=value, label=label, language="en",
                    sequence=str(n * 10), inactive="false",
                ))  # fmt: skip


def _seed_customers(conn: sqlite3.Connection, at: str) -> None:
    admin = Caller(ADMIN_SYS_ID, ADMIN_USER, "System Administrator")
    for name, country, city, phone, website, notes in COMPANIES:
        body = {"sys_id": _sys_id("core_company", name), "name": name, "country": country,
                "city": city, "phone": phone, "website": website, "notes": notes,
                "customer": "true"}  # fmt: skip
        write_record(conn, TABLES["core_company"], None, body, admin, at)
    for company, first, last, email, title, phone, mobile in CONTACTS:
        user_name = f"{first}.{last}".lower()
        body = {"sys_id": _sys_id("customer_contact", user_name), "user_name": user_name,
                "first_name": first, "last_name": last, "email": email, "title": title,
                "phone": phone, "mobile_phone": mobile,
                "company": _sys_id("core_company", company),
                "account": _sys_id("core_company", company)}  # fmt: skip
        write_record(conn, TABLES["customer_contact"], None, body, admin, at)


def seed(conn: sqlite3.Connection) -> None:
    """Users, groups, 60 incidents (INC0010101-INC0010160), their journals, companies and
    their contacts, and the dictionary.

    Runs once, after `make_credentials`, so the admin's password and the dev OAuth tokens
    from the stored credentials are valid from the first start.
    """
    at = snow_time(_SEED_EPOCH)
    creds = get_meta(conn, "credentials")
    _seed_people(conn, at)
    conn.execute(
        "INSERT INTO user_passwords VALUES (?, ?)", (ADMIN_USER, hash_password(creds["password"]))
    )
    _seed_incidents(conn)
    _seed_customers(conn, at)
    _seed_dictionary(conn, at)
    set_meta(conn, "customers_seeded", utc_iso())
    # The dev tokens carry grant "dev": password grants never hand them out or re-arm them.
    expires = time.time() + _DEV_TOKEN_TTL
    for kind in ("refresh", "access"):
        row = (creds[f"{kind}_token"], kind, creds["client_id"], ADMIN_SYS_ID, "dev", expires)
        conn.execute("INSERT INTO oauth_tokens VALUES (?, ?, ?, ?, ?, ?)", row)


def upgrade(conn: sqlite3.Connection) -> None:
    """A file seeded before companies and contacts existed gains them and their dictionary.

    The dictionary rows have fixed sys_ids, so writing them again only adds the new ones.
    """
    if get_meta(conn, "customers_seeded") is not None:
        return
    at = snow_time(_SEED_EPOCH)
    _seed_customers(conn, at)
    _seed_dictionary(conn, at)
    set_meta(conn, "customers_seeded", utc_iso())
