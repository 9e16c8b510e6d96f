"""Mapping governance against the sandboxes: describe, check --against-crm, and dry run.

The CLI runs as a user runs it (a process with its own UWF_HOME, sandboxes on loopback for the
command); the API runs in a live server. That nothing was written is asserted through each
CRM sandbox's own API and its request statistics.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, LiveServer
from tests.integration.test_cli import Uwf
from tests.sandbox_server import serve_sandbox
from uwf.sandboxes import sandbox_credentials

# connection → (native priority field, a value it allows, a native field the spec maps)
CONNECTIONS = {
    "acme-zendesk": ("priority", "urgent", "assignee_id"),
    "globex-salesforce": ("Priority", "High", "OwnerId"),
    "initech-servicenow": ("priority", "1", "assigned_to"),
    "umbrella-hubspot": ("hs_ticket_priority", "URGENT", "hubspot_owner_id"),
    "contoso-dynamics": ("prioritycode", 1, "ownerid"),
    "hooli-freshdesk": ("priority", 4, "responder_id"),
}


@pytest.fixture
def uwf(tmp_path: Path) -> Uwf:
    return Uwf(tmp_path / "home")


def check_globex(uwf: Uwf, tmp_path: Path, text: str) -> tuple[int, dict[str, str], str]:
    """`metadata check --against-crm --tenant globex` over the examples with globex.yaml set to
    `text`: the exit code, each finding line by its path, and the whole output."""
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, directory)
    (directory / "globex.yaml").write_text(text)
    result = uwf("metadata", "check", str(directory), "--against-crm", "--tenant", "globex")
    by_path = {line.split(": ")[1]: line for line in result.stdout.splitlines()}
    return result.code, by_path, result.stdout


GLOBEX = EXAMPLES / "globex.yaml"


@pytest.mark.parametrize("connection", sorted(CONNECTIONS))
def test_describe_reads_live_fields_of_every_crm(uwf: Uwf, connection: str) -> None:
    priority_field, allowed, owner_field = CONNECTIONS[connection]

    result = uwf("connections", "describe", connection, "--object", "case", "--json")

    assert result.code == 0, result.err
    described = result.json()
    fields = {f["name"]: f for f in described["fields"]}
    assert described["connection"] == connection
    priority = fields[priority_field]
    assert priority["canonical"] == "priority"
    values = [option["value"] for option in priority["options"]]
    assert allowed in values, values
    assert all(option["label"] for option in priority["options"])
    assert fields[owner_field]["canonical"] == "owner_id"


# (connection, object) → (native field, its canonical name, a value its options allow or None,
# the native owner field)
OBJECT_FIELDS = {
    ("contoso-dynamics", "account"): ("industrycode", "industry", 7, "ownerid"),
    ("contoso-dynamics", "contact"): ("emailaddress1", "email", None, "ownerid"),
    ("umbrella-hubspot", "account"): (
        "industry", "industry", "COMPUTER_SOFTWARE", "hubspot_owner_id"
    ),
    ("umbrella-hubspot", "contact"): (
        "associatedcompanyid", "account_id", None, "hubspot_owner_id"
    ),
    ("globex-salesforce", "account"): ("Industry", "industry", "Technology", "OwnerId"),
    ("globex-salesforce", "contact"): ("AccountId", "account_id", None, "OwnerId"),
}  # fmt: skip


@pytest.mark.parametrize(("connection", "obj"), sorted(OBJECT_FIELDS))
def test_describe_reads_live_fields_of_accounts_and_contacts(
    uwf: Uwf, connection: str, obj: str
) -> None:
    native, canonical, allowed, owner = OBJECT_FIELDS[(connection, obj)]

    result = uwf("connections", "describe", connection, "--object", obj, "--json")

    assert result.code == 0, result.err
    fields = {f["name"]: f for f in result.json()["fields"]}
    assert fields[native]["canonical"] == canonical
    if allowed is not None:
        assert allowed in [option["value"] for option in fields[native]["options"]]
    assert fields[owner]["canonical"] == "owner_id"


def test_describe_reads_salesforce_users_from_the_sobject_describe(uwf: Uwf) -> None:
    result = uwf("connections", "describe", "globex-salesforce", "--object", "user", "--json")

    assert result.code == 0, result.err
    described = result.json()
    assert described["native_name"] == "User"
    fields = {f["name"]: f for f in described["fields"]}
    assert {name: fields[name]["canonical"] for name in ("Email", "Username", "IsActive")} == {
        "Email": "email",
        "Username": "username",
        "IsActive": "active",
    }
    assert fields["IsActive"]["type"] == "boolean"


def test_describe_prints_a_table_and_refuses_unknown_objects(uwf: Uwf) -> None:
    table = uwf("connections", "describe", "globex-salesforce")
    assert table.code == 0, table.err
    assert "Priority" in table.stdout
    assert "High" in table.stdout
    assert "CaseNumber" in table.stdout  # read-only fields are listed too

    unknown = uwf("connections", "describe", "globex-salesforce", "--object", "invoice")
    assert unknown.code == 1
    assert "no object 'invoice'" in unknown.err
    assert "(known: account, case, comment, contact, user)" in unknown.err

    missing = uwf("connections", "describe", "nope")
    assert missing.code == 1
    assert "no connection 'nope'" in missing.err


# object → (native field → canonical field it maps, or None), and a custom field's options
ZENDESK_DESCRIBED = {
    "account": ({"name": "name", "notes": "description", "details": None},
                ("organization_fields/account_tier", ["basic", "premium", "enterprise"])),
    "contact": ({"name": "name", "email": "email", "organization_id": "account_id"},
                ("user_fields/vip", None)),
    "user": ({"name": "name", "email": "email", "role": "role"}, ("user_fields/vip", None)),
}  # fmt: skip


@pytest.mark.parametrize("obj", sorted(ZENDESK_DESCRIBED))
def test_describe_reads_zendesk_organization_and_user_fields(uwf: Uwf, obj: str) -> None:
    mapped, (custom, options) = ZENDESK_DESCRIBED[obj]

    result = uwf("connections", "describe", "acme-zendesk", "--object", obj, "--json")

    assert result.code == 0, result.err
    fields = {f["name"]: f for f in result.json()["fields"]}
    assert {name: fields[name]["canonical"] for name in mapped} == mapped
    assert fields[custom]["canonical"] is None
    if options is not None:
        assert [o["value"] for o in fields[custom]["options"]] == options


def test_check_against_crm_passes_the_examples_for_all_six_tenants(uwf: Uwf) -> None:
    result = uwf("metadata", "check", str(EXAMPLES), "--against-crm")

    assert result.code == 0, result.stdout + result.err
    assert "OK" in result.err
    assert result.stdout == ""


def _break_globex(directory: Path) -> None:
    path = directory / "globex.yaml"
    text = path.read_text()
    text = text.replace("  P1: High\n", "  P1: Critical\n")
    text = text.replace(
        "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n",
        "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n"
        '      Escalation_Level__c: "{{ input.priority }}"\n'
        "      CaseNumber: x\n",
    )
    path.write_text(text)


def test_check_against_crm_reports_unknown_fields_and_picklist_values(
    uwf: Uwf, tmp_path: Path
) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, directory)
    _break_globex(directory)
    source = (directory / "globex.yaml").read_text().splitlines()

    result = uwf("metadata", "check", str(directory), "--against-crm")

    assert result.code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    by_path = {line.split(": ")[1]: line for line in lines}
    priority = by_path["steps[1].fields.priority"]
    # Priority is a canonical enum: 'Critical' is neither a canonical nor a Salesforce value.
    assert "'case_priority' maps P1 → 'Critical'" in priority
    assert "'Critical' is not one of low, normal, high, urgent" in priority
    unknown = by_path["steps[1].fields.Escalation_Level__c"]
    assert "'Escalation_Level__c' does not exist on salesforce Case" in unknown
    assert "read-only" in by_path["steps[1].fields.CaseNumber"]
    for line in lines:  # file:line points at the field in the YAML
        file, number = line.split(": ")[0].split(":")
        assert file == "globex.yaml"
        field = line.split(": ")[1].rsplit(".", 1)[1]
        assert source[int(number) - 1].strip().startswith(f"{field}:")
    assert "3 problem(s)" in result.err

    # Only the broken tenant fails; the others are still clean.
    other = uwf("metadata", "check", str(directory), "--against-crm", "--tenant", "acme")
    assert other.code == 0, other.stdout
    as_json = uwf(
        "metadata", "check", str(directory), "--against-crm", "--tenant", "globex", "--json"
    )
    assert as_json.code == 1
    assert {f["severity"] for f in as_json.json()} == {"error"}


def test_check_against_crm_catches_a_zendesk_mapping_to_nothing(uwf: Uwf, tmp_path: Path) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES / "acme", directory)
    connection = directory / "acme-zendesk.yaml"
    connection.write_text(connection.read_text().replace("P1: urgent", "P1: critical"))
    workflow = directory / "escalate_case.yaml"
    field = "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n"
    assert field in workflow.read_text()
    workflow.write_text(workflow.read_text().replace(field, field + "      severity: high\n"))

    result = uwf("metadata", "check", str(directory), "--against-crm")

    assert result.code == 1
    assert "maps P1 → 'critical'" in result.stdout
    assert "field 'severity' does not exist on zendesk ticket" in result.stdout


def test_check_against_crm_catches_a_tenant_mapping_to_a_missing_picklist_value(
    uwf: Uwf, tmp_path: Path
) -> None:
    # Globex maps the canonical priorities itself, one of them to a value its org lacks, and
    # adds a custom field its org does not have.
    code, by_path, stdout = check_globex(
        uwf,
        tmp_path,
        GLOBEX.read_text()
        .replace(
            "connector: salesforce\n",
            "connector: salesforce\n"
            "field_mappings:\n"
            "  case:\n"
            "    priority:\n"
            "      native: Priority\n"
            "      type: enum\n"
            "      values: {low: Low, normal: Medium, high: High, urgent: Critical}\n"
            "custom_fields:\n"
            "  case:\n"
            "    escalation_level: {native: Escalation_Level__c, type: integer}\n",
        )
        .replace(
            "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n",
            "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n"
            "      escalation_level: 2\n",
        ),
    )

    assert code == 1
    # The connection's own mappings are reported once, where the connection declares them.
    assert sorted(by_path) == [
        "custom_fields.case.escalation_level",
        "field_mappings.case.priority",
    ], stdout
    mapping = by_path["field_mappings.case.priority"]
    assert mapping.startswith("globex.yaml:")
    assert "the mapping of 'priority' (native 'Priority') turns 'urgent' into 'Critical'" in mapping
    assert "allowed: High, Medium, Low" in mapping
    assert (
        "field 'escalation_level' (native 'Escalation_Level__c') does not exist on salesforce Case"
        in by_path["custom_fields.case.escalation_level"]
    )


def test_check_needs_a_directory_or_against_crm(uwf: Uwf) -> None:
    result = uwf("metadata", "check")
    assert result.code == 2
    assert "--against-crm" in result.err


# -- dry run ------------------------------------------------------------------------------------

ESCALATE = {
    "workflow": "escalate_case",
    "input": {
        "case_id": 123,
        "priority": "P1",
        "owner_email": "alice@acme.test",
        "reason": "dry run only",
    },
}


def _stats(live_server: LiveServer, crm: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(
        f"{live_server.base_url}/sandbox/{crm}/_control", timeout=10
    ).json()["stats"]
    return stats


def test_api_dry_run_lists_requests_and_diffs_without_writing(live_server: LiveServer) -> None:
    with live_server.client() as client, live_server.sandbox() as sandbox:
        before = sandbox.get("/api/v2/tickets/123.json").json()["ticket"]
        comments_before = sandbox.get("/api/v2/tickets/123/comments.json").json()["comments"]
        writes_before = _stats(live_server, "zendesk")["writes"]

        response = client.post(
            "/v1/tenants/acme/actions", params={"dry_run": "true"}, json=ESCALATE
        )

        assert response.status_code == 200, response.text
        plan = response.json()
        assert plan["dry_run"] is True
        assert plan["status"] == "succeeded", plan.get("error")
        steps = {s["id"]: s for s in plan["steps"]}
        assert steps["owner"]["sent"] is True
        assert steps["set_priority"]["sent"] is False
        assert steps["set_priority"]["diff"] == [
            {
                "field": "priority",
                "native": "priority",
                "current": before["priority"],
                "new": "urgent",
                "changed": True,
            }
        ]
        assert steps["reassign"]["diff"][0]["current"] == before["assignee_id"]
        writes = [r for r in plan["requests"] if not r["sent"]]
        assert [(r["method"], r["url"].rsplit("/sandbox/zendesk", 1)[1]) for r in writes] == [
            ("PUT", "/api/v2/tickets/123.json")
        ] * 3
        assert writes[0]["body"] == {"ticket": {"priority": "urgent"}}
        assert writes[2]["body"]["ticket"]["comment"] == {
            "body": "Escalated: dry run only",
            "public": False,
        }
        reads = [r for r in plan["requests"] if r["sent"]]
        assert all(r["method"] == "GET" and r["status"] == 200 for r in reads)
        # Secrets are redacted: the API token appears nowhere in the plan.
        token = sandbox_credentials(live_server.home, "zendesk")["api_token"]
        assert token not in response.text
        assert writes[0]["headers"]["Authorization"] == "[REDACTED]"

        # The CRM is untouched, and the dry run is not an execution.
        after = sandbox.get("/api/v2/tickets/123.json").json()["ticket"]
        assert (after["priority"], after["assignee_id"]) == (
            before["priority"],
            before["assignee_id"],
        )
        assert after["updated_at"] == before["updated_at"]
        assert (
            sandbox.get("/api/v2/tickets/123/comments.json").json()["comments"] == comments_before
        )
        assert _stats(live_server, "zendesk")["writes"] == writes_before
        assert client.get("/v1/tenants/acme/executions").json()["items"] == []


def test_api_dry_run_refuses_bad_input_like_a_real_run(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(
            "/v1/tenants/acme/actions",
            params={"dry_run": "true"},
            json={"workflow": "escalate_case", "input": {"case_id": 123, "priority": "P9"}},
        )
        assert response.status_code == 422
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert client.get("/v1/tenants/acme/executions").json()["items"] == []


def _salesforce_case(home: Path, case_number: str) -> tuple[dict[str, Any], int]:
    """The case and its comment count, read through the Salesforce sandbox's own REST API."""
    with serve_sandbox(home, "salesforce") as running:
        token = running.credentials["access_token"]
        with httpx.Client(
            base_url=f"{running.url}/services/data/v59.0",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as api:
            case = api.get(f"/sobjects/Case/CaseNumber/{case_number}")
            case.raise_for_status()
            soql = f"SELECT Id FROM CaseComment WHERE ParentId = '{case.json()['Id']}'"  # noqa: S608 -- an Id from the sandbox itself
            comments = api.get("/query", params={"q": soql})
            comments.raise_for_status()
            return case.json(), comments.json()["totalSize"]


def test_cli_dry_run_on_salesforce_writes_nothing(uwf: Uwf) -> None:
    case_before, comments_before = _salesforce_case(uwf.home, "00001001")
    data = '{"case_id": "00001001", "priority": "P1", "reason": "dry"}'

    result = uwf(
        "run", "escalate_case", "--tenant", "globex", "--input", data, "--dry-run", "--json"
    )

    assert result.code == 0, result.err
    plan = result.json()
    steps = {s["id"]: s for s in plan["steps"]}
    [change] = steps["set_priority"]["diff"]
    assert change == {
        "field": "priority",
        "native": "Priority",
        "current": case_before["Priority"],
        "new": "High",
        "changed": case_before["Priority"] != "High",
    }
    assert steps["note"]["sent"] is False
    assert [r["method"] for r in plan["requests"] if not r["sent"]] == ["PATCH", "POST"]

    text = uwf("run", "escalate_case", "--tenant", "globex", "--input", data, "--dry-run")
    assert text.code == 0, text.err
    assert "nothing was written" in text.stdout
    assert f'priority: "{case_before["Priority"]}" → "High"' in text.stdout
    assert "NOT SENT" in text.stdout

    listed = uwf("executions", "list", "--json")
    assert listed.code == 0
    assert listed.stdout.strip() == "[]"
    case_after, comments_after = _salesforce_case(uwf.home, "00001001")
    assert case_after == case_before
    assert comments_after == comments_before


ONBOARD = """
---
kind: workflow
name: onboard_customer
tenant: globex
connection: globex-salesforce
input_schema: {type: object}
steps:
  - id: company
    type: create_record
    object: account
    fields:
      name: Initrode
      industry: Aerospace
      country: DE
      tier: gold
  - id: person
    type: create_record
    object: contact
    fields:
      last_name: Waddams
      email: milton@initrode.test
      account_id: "{{ steps.company.id }}"
      Department: Basement
"""


def test_check_against_crm_checks_mapped_salesforce_account_and_contact_fields(
    uwf: Uwf, tmp_path: Path
) -> None:
    text = GLOBEX.read_text().replace(
        "connector: salesforce\n",
        "connector: salesforce\ncustom_fields:\n  account:\n    tier: {native: Tier__c}\n",
    )
    code, by_path, stdout = check_globex(uwf, tmp_path, text + ONBOARD)

    assert code == 1
    assert sorted(by_path) == [
        "custom_fields.account.tier",
        "steps[0].fields.industry",
        "steps[1].fields.Department",
    ], stdout
    assert "'Aerospace'" in by_path["steps[0].fields.industry"]
    assert (
        "Manufacturing, Technology, Retail, Finance, Energy" in by_path["steps[0].fields.industry"]
    )
    assert "does not exist on salesforce Account" in by_path["custom_fields.account.tier"]
    assert "does not exist on salesforce Contact" in by_path["steps[1].fields.Department"]


def test_check_against_crm_checks_a_connections_custom_fields_before_any_workflow_uses_them(
    uwf: Uwf, tmp_path: Path
) -> None:
    """Declared, not written yet: a typo in a custom field is caught the day it is added."""
    code, by_path, stdout = check_globex(
        uwf,
        tmp_path,
        GLOBEX.read_text().replace(
            "connector: salesforce\n",
            "connector: salesforce\n"
            "custom_fields:\n"
            "  case:\n"
            "    escalated: {native: SL_Escalated__c, type: boolean}\n"
            "    severity:\n"
            "      native: SL_Severity__c\n"
            "      type: enum\n"
            "      values: {minor: Sev3, major: Sev2, critical: Sev9}\n"
            "    region: {native: SL_Regoin__c}\n",
        ),
    )

    assert code == 1
    assert sorted(by_path) == [
        "custom_fields.case.region",
        "custom_fields.case.severity",
    ], stdout
    assert "'SL_Regoin__c'" in by_path["custom_fields.case.region"]
    assert "turns 'critical' into 'Sev9'" in by_path["custom_fields.case.severity"]
    assert "allowed: Sev1, Sev2, Sev3" in by_path["custom_fields.case.severity"]
