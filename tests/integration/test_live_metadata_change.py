"""A tenant adds a custom field and a value map in YAML, applies it, and the next run writes them.

UWF keeps running throughout (`live_server`, the whole app on loopback): no code, no restart.
The metadata is applied the way an integration engineer applies it, with `uwf metadata apply`
against the same Pipe DB, and every outcome is read back through the CRM sandbox's own API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import EXAMPLES, LiveServer
from uwf.sandboxes import sandbox_credentials

REPO = Path(__file__).resolve().parents[2]
PRIORITY_STEP = "      priority: \"{{ value_map('case_priority', input.priority) }}\"\n"
ESCALATED_STEP = "      escalated: \"{{ value_map('escalation_flag', input.priority) }}\"\n"
# The new value map: which priorities count as an escalation, in the tenant's own words
# ("yes"/"no"), which the custom field's type (boolean) turns into what the CRM expects.
ESCALATION_MAP = """
---
kind: value_map
name: escalation_flag
tenant: {tenant}
values: {{P1: "yes", P2: "yes", P3: "no", P4: "no"}}
on_unmapped: error
"""


def _uwf(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "uwf"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "uwf.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    env.update(UWF_HOME=str(home), COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def _edit(path: Path, after: str, added: str) -> None:
    """Add `added` after the first `after` in the file, as a person editing the YAML would."""
    text = path.read_text()
    assert after in text, f"{after!r} not in {path}"
    path.write_text(text.replace(after, after + added, 1))


def _add_custom_field(directory: Path, tenant: str, connection: Path, custom: str) -> None:
    """The custom field on the connection, the value map, and one more field in the step."""
    _edit(connection, "timeout_seconds: 20\n", custom)
    with connection.open("a") as out:
        out.write(ESCALATION_MAP.format(tenant=tenant))
    workflow = (
        directory / "globex.yaml"
        if tenant == "globex"
        else connection.parent / ("escalate_case.yaml")
    )
    _edit(workflow, PRIORITY_STEP, ESCALATED_STEP)


def _apply(live_server: LiveServer, directory: Path) -> None:
    applied = _uwf(live_server.home, "metadata", "apply", str(directory))
    assert applied.returncode == 0, applied.stderr
    assert "applied as version 2" in applied.stderr


def _escalate(client: httpx.Client, tenant: str, case_id: Any, priority: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant}/actions",
        params={"wait": 30},
        json={"workflow": "escalate_case", "input": {"case_id": case_id, "priority": priority}},
    )
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()
    return execution


def test_salesforce_custom_field_is_written_by_the_next_execution(
    live_server: LiveServer, tmp_path: Path
) -> None:
    token = sandbox_credentials(live_server.home, "salesforce")["access_token"]
    salesforce = httpx.Client(
        base_url=f"{live_server.base_url}/sandbox/salesforce/services/data/v59.0",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    def case(number: str) -> dict[str, Any]:
        response = salesforce.get(f"/sobjects/Case/CaseNumber/{number}")
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        return record

    with live_server.client() as client, salesforce:
        before = _escalate(client, "globex", "00001124", "P1")
        assert before["status"] == "succeeded", before
        assert case("00001124")["SL_Escalated__c"] is False  # version 1 knows no such field

        directory = tmp_path / "metadata"
        shutil.copytree(EXAMPLES, directory)
        custom = (
            "custom_fields:\n  case:\n    escalated: {native: SL_Escalated__c, type: boolean}\n"
        )
        _add_custom_field(directory, "globex", directory / "globex.yaml", custom)
        _apply(live_server, directory)

        after = _escalate(client, "globex", "00001125", "P1")
        assert after["status"] == "succeeded", (after.get("error"), after.get("steps"))
        assert after["workflow_version"] == 2
        record = case("00001125")
        assert (record["SL_Escalated__c"], record["Priority"]) == (True, "High")

        # "no" from the value map is written as false, not as the text Salesforce would refuse.
        calm = _escalate(client, "globex", "00001126", "P4")
        assert calm["status"] == "succeeded", calm
        assert (case("00001126")["SL_Escalated__c"], case("00001126")["Priority"]) == (
            False,
            "Low",
        )


def test_zendesk_custom_field_id_is_written_by_the_next_execution(
    live_server: LiveServer, tmp_path: Path
) -> None:
    def escalated(sandbox: httpx.Client, ticket_id: int) -> Any:
        ticket = sandbox.get(f"/api/v2/tickets/{ticket_id}.json").json()["ticket"]
        return next(f["value"] for f in ticket["custom_fields"] if f["id"] == 360003)

    with live_server.client() as client, live_server.sandbox() as sandbox:
        fields = sandbox.get("/api/v2/ticket_fields.json").json()["ticket_fields"]
        assert {"id": 360003, "type": "checkbox"}.items() <= next(
            f for f in fields if f["id"] == 360003
        ).items()
        before = _escalate(client, "acme", 124, "P1")
        assert before["status"] == "succeeded", before
        assert escalated(sandbox, 124) is None

        directory = tmp_path / "metadata"
        shutil.copytree(EXAMPLES, directory)
        custom = (
            "custom_fields:\n  case:\n"
            "    escalated: {native: 'custom_fields[360003]', type: boolean}\n"
        )
        _add_custom_field(directory, "acme", directory / "acme" / "acme-zendesk.yaml", custom)
        _apply(live_server, directory)

        after = _escalate(client, "acme", 131, "P2")
        assert after["status"] == "succeeded", (after.get("error"), after.get("steps"))
        assert after["workflow_version"] == 2
        ticket = sandbox.get("/api/v2/tickets/131.json").json()["ticket"]
        assert (escalated(sandbox, 131), ticket["priority"]) == (True, "high")
        # The ticket's other custom field (its order number) is left as it was.
        assert {"id": 360001, "value": "ORD-10131"} in ticket["custom_fields"]

        calm = _escalate(client, "acme", 135, "P4")
        assert calm["status"] == "succeeded", calm.get("error")
        assert escalated(sandbox, 135) is False
