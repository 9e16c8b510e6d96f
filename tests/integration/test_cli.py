"""The `uwf` command line, run as a user runs it: a process, its exit code and what it prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from uwf.connectors import builtin_connectors

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "metadata" / "acme"
EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
ESCALATE_INPUT = '{"case_id": 123, "priority": "P2", "reason": "cli test"}'


def _command() -> list[str]:
    script = Path(sys.executable).parent / "uwf"
    return [str(script)] if script.exists() else [sys.executable, "-m", "uwf.cli"]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def err(self) -> str:
        """stderr with Rich's line wrapping undone, as one line of words."""
        return " ".join(self.stderr.split())

    def json(self) -> Any:
        """The JSON document on stdout (log lines before it, if any, are skipped)."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line in ("{", "["))
        return json.loads("\n".join(lines[start:]))


@dataclass(frozen=True)
class Uwf:
    """`uwf` with its own UWF_HOME (and so its own SQLite Pipe DB and sandbox accounts)."""

    home: Path

    def __call__(self, *args: str) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
        # An 80-column terminal, the narrowest a user is likely to have.
        env.update(UWF_HOME=str(self.home), COLUMNS="80", NO_COLOR="1")
        proc = subprocess.run(
            [*_command(), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def uwf(tmp_path: Path) -> Uwf:
    return Uwf(tmp_path / "home")


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    target = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, target)
    return target


def replace_once(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is no longer in {file.name}; update the test"
    file.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(file: Path, text: str) -> int:
    lines = file.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if text in line)


# -- metadata --------------------------------------------------------------------------------


def test_validate_examples_says_ok(uwf: Uwf) -> None:
    result = uwf("metadata", "validate", "examples/metadata/acme")

    assert result.code == 0, result.stderr
    assert result.err.startswith("OK: 1 tenant(s), 1 connection(s), 2 workflow(s); digest ")


def test_validate_a_broken_copy_lists_each_problem_and_applies_nothing(
    uwf: Uwf, metadata: Path
) -> None:
    workflow, connection = metadata / "escalate_case.yaml", metadata / "acme-zendesk.yaml"
    replace_once(workflow, "object: user", "object: agent")
    replace_once(connection, "type: api_token", "type: bearer")
    replace_once(connection, "  email: admin@uwf-sandbox.test\n", "")
    replace_once(connection, "connector: zendesk", "connector: pipedrive")

    result = uwf("metadata", "validate", str(metadata))

    assert result.code == 1
    lines = result.stderr.splitlines()
    assert (
        f"acme-zendesk.yaml:{line_of(connection, 'connector: pipedrive')}: connector: "
        f"unknown connector 'pipedrive' (hint: known: {', '.join(sorted(builtin_connectors()))})"
    ) in lines
    assert result.err.endswith("1 problem(s); nothing was applied")

    replace_once(connection, "connector: pipedrive", "connector: zendesk")
    result = uwf("metadata", "validate", str(metadata))

    assert result.code == 1
    assert result.stderr.splitlines() == [
        f"escalate_case.yaml:{line_of(workflow, 'object: agent')}: steps[0].object: "
        "connector 'zendesk' has no object 'agent' (hint: known: account, case, comment, "
        "contact, user)",
        "1 problem(s); nothing was applied",
    ]


def test_apply_refuses_broken_metadata(uwf: Uwf, metadata: Path) -> None:
    replace_once(metadata / "tenants.yaml", "display_name:", "colour: red\ndisplay_name:")

    result = uwf("metadata", "apply", str(metadata))

    assert result.code == 1
    assert "tenants.yaml:" in result.err
    assert "colour: unknown field (hint: fields: kind, name, display_name, description)" in (
        result.err
    )
    assert "nothing was applied" in result.err
    assert "no metadata has been applied yet" in uwf("metadata", "export", "--out", "x").err


def test_validate_a_missing_directory(uwf: Uwf, tmp_path: Path) -> None:
    result = uwf("metadata", "validate", str(tmp_path / "nowhere"))

    assert result.code == 1
    assert "not a directory" in result.err


def test_apply_is_versioned_and_idempotent(uwf: Uwf, metadata: Path) -> None:
    first = uwf("metadata", "apply", "examples/metadata/acme")
    assert (first.code, first.err) == (0, "applied as version 1")

    again = uwf("metadata", "apply", "examples/metadata/acme")
    assert (again.code, again.err) == (0, "unchanged: version 1 already has this content")

    replace_once(metadata / "tenants.yaml", "the quickstart tenant", "the first tenant")
    changed = uwf("metadata", "apply", str(metadata))
    assert (changed.code, changed.err) == (0, "applied as version 2")

    back = uwf("metadata", "apply", "examples/metadata/acme")
    assert (back.code, back.err) == (0, "applied as version 3")


def test_export_writes_yaml_that_validates_and_reapplies_unchanged(
    uwf: Uwf, tmp_path: Path
) -> None:
    assert uwf("metadata", "apply", "examples/metadata/acme").code == 0
    out = tmp_path / "exported"

    exported = uwf("metadata", "export", "--out", str(out))

    assert exported.code == 0, exported.stderr
    assert exported.err == f"wrote version 1 to {out} (1 file(s))"
    assert sorted(p.name for p in out.iterdir()) == ["acme.yaml"]
    kinds = [d["kind"] for d in yaml.safe_load_all((out / "acme.yaml").read_text())]
    assert kinds == ["tenant", "connection", "value_map", "workflow", "workflow", "trigger"]

    original = uwf("metadata", "validate", "examples/metadata/acme")
    validated = uwf("metadata", "validate", str(out))
    assert validated.code == 0, validated.stderr
    assert validated.err == original.err  # same counts and same digest

    reapplied = uwf("metadata", "apply", str(out))
    assert (reapplied.code, reapplied.err) == (0, "unchanged: version 1 already has this content")


def test_schema_prints_a_json_schema_that_accepts_the_examples(uwf: Uwf) -> None:
    result = uwf("metadata", "schema")

    assert result.code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for file in EXAMPLES.glob("*.yaml"):
        for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            assert validator.is_valid(document), file.name
    assert not validator.is_valid({"kind": "tenant", "name": "acme", "colour": "red"})


# -- db and sandboxes ------------------------------------------------------------------------


def test_db_upgrade_creates_the_sqlite_pipe_db(uwf: Uwf) -> None:
    result = uwf("db", "upgrade")

    assert result.code == 0, result.stderr
    assert result.err == "sqlite schema is up to date"
    assert (uwf.home / "uwf.db").is_file()
    assert uwf("db", "upgrade").code == 0


def test_sandbox_accounts_prints_the_zendesk_dev_account(uwf: Uwf) -> None:
    result = uwf("sandbox", "accounts")

    assert result.code == 0, result.stderr
    zendesk = json.loads(result.stdout)["zendesk"]
    assert zendesk["base_url"].endswith("/sandbox/zendesk")
    assert zendesk["email"] == "admin@uwf-sandbox.test"
    assert len(zendesk["api_token"]) >= 20
    assert json.loads(uwf("sandbox", "accounts").stdout)["zendesk"] == zendesk


# -- run and executions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    uwf: Uwf
    result: Result
    execution: dict[str, Any]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """One `uwf run escalate_case`, shared by the tests that inspect its execution."""
    uwf = Uwf(tmp_path_factory.mktemp("cli-run") / "home")
    result = uwf("run", "escalate_case", "--tenant", "acme", "--input", ESCALATE_INPUT)
    assert result.code == 0, result.stdout + result.stderr
    return Ran(uwf, result, result.json())


def test_run_prints_the_succeeded_execution(ran: Ran) -> None:
    execution = ran.execution

    assert (execution["tenant"], execution["workflow"]) == ("acme", "escalate_case")
    assert execution["status"] == "succeeded"
    assert execution["input"] == json.loads(ESCALATE_INPUT)
    assert [(s["id"], s["status"]) for s in execution["steps"]] == [
        ("owner", "skipped"),
        ("set_priority", "succeeded"),
        ("reassign", "skipped"),
        ("note", "succeeded"),
    ]
    assert execution["output"] == {"case_id": 123, "priority": "high", "owner_id": None}
    note = execution["steps"][3]
    assert note["request"]["body"]["ticket"]["comment"] == {
        "body": "Escalated: cli test",
        "public": False,
    }


def test_run_never_prints_the_secret(ran: Ran) -> None:
    token = json.loads(ran.uwf("sandbox", "accounts").stdout)["zendesk"]["api_token"]

    assert token not in ran.result.stdout + ran.result.stderr
    assert ran.execution["steps"][1]["request"]["headers"]["Authorization"] == "[REDACTED]"


def test_run_stdout_is_only_the_execution_json(ran: Ran) -> None:
    # `uwf run … | jq` must work: logs go to stderr.
    assert json.loads(ran.result.stdout) == ran.execution


def test_run_with_input_that_is_not_json(uwf: Uwf) -> None:
    result = uwf("run", "escalate_case", "--tenant", "acme", "--input", '{"case_id": 123,')

    assert result.code == 2
    assert result.err.startswith("error: --input is not valid JSON: Expecting property name")
    assert "Traceback" not in result.stderr


def test_run_with_input_that_breaks_the_schema_names_the_field(uwf: Uwf) -> None:
    result = uwf(
        "run", "escalate_case", "--tenant", "acme", "--input", '{"case_id": 123, "priority": "P9"}'
    )

    assert result.code == 1
    assert (
        "error: input does not match workflow 'escalate_case': /input/priority: "
        "'P9' is not one of ['P1', 'P2', 'P3', 'P4']"
    ) in result.err
    assert "Traceback" not in result.stderr


def test_run_an_unknown_workflow_lists_the_known_ones(uwf: Uwf) -> None:
    result = uwf("run", "close_case", "--tenant", "acme", "--input", "{}")

    assert result.code == 1
    assert (
        "unknown workflow 'close_case' for tenant 'acme' (known: escalate_case, triage_cases)"
        in (" ".join(result.err.split()))
    )


def test_executions_list_shows_the_execution(ran: Ran) -> None:
    as_json = ran.uwf("executions", "list", "--json")
    table = ran.uwf("executions", "list")

    assert as_json.code == 0, as_json.stderr
    [row] = [r for r in json.loads(as_json.stdout) if r["id"] == ran.execution["id"]]
    assert (row["tenant"], row["workflow"], row["status"], row["error"]) == (
        "acme",
        "escalate_case",
        "succeeded",
        None,
    )
    assert table.code == 0
    assert "escalate_case" in table.stdout
    assert "succeeded" in table.stdout
    assert ran.execution["id"][:8] in table.stdout


def test_executions_list_table_shows_whole_ids_in_80_columns(ran: Ran) -> None:
    assert ran.execution["id"] in ran.uwf("executions", "list").stdout


def test_executions_list_filters_by_status(ran: Ran) -> None:
    succeeded = json.loads(ran.uwf("executions", "list", "--status", "succeeded", "--json").stdout)
    failed = json.loads(ran.uwf("executions", "list", "--status", "failed", "--json").stdout)

    assert ran.execution["id"] in [r["id"] for r in succeeded]
    assert failed == []


def test_executions_list_with_an_unknown_status_names_the_known_ones(uwf: Uwf) -> None:
    result = uwf("executions", "list", "--status", "bogus")

    assert result.code == 2
    assert f"unknown status 'bogus' (known: {', '.join(EXECUTION_STATUSES)})" in result.err


def test_executions_show_prints_the_execution(ran: Ran) -> None:
    result = ran.uwf("executions", "show", ran.execution["id"])

    assert result.code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == ran.execution["id"]
    assert shown["status"] == "succeeded"
    assert [s["id"] for s in shown["steps"]] == ["owner", "set_priority", "reassign", "note"]
    assert shown["output"] == ran.execution["output"]


def test_executions_show_an_unknown_id(ran: Ran) -> None:
    result = ran.uwf("executions", "show", "no-such-execution")

    assert result.code == 1
    assert result.err == "error: no execution 'no-such-execution'"


# -- connections -----------------------------------------------------------------------------


def test_connections_test_reports_latency_and_rate_budget(uwf: Uwf) -> None:
    result = uwf("connections", "test", "acme-zendesk")

    assert result.code == 0, result.stderr
    assert result.stdout.startswith("OK: acme-zendesk (zendesk) at http://127.0.0.1:")
    assert "HTTP status: 200" in result.stdout
    assert "/700 requests left" in result.stdout


def test_connections_test_an_unknown_connection(uwf: Uwf) -> None:
    result = uwf("connections", "test", "acme-salesforce")

    assert result.code == 1
    assert "no connection 'acme-salesforce' (known:" in result.err
    assert "acme-zendesk" in result.err


def test_connections_test_explains_refused_credentials(uwf: Uwf, metadata: Path) -> None:
    replace_once(
        metadata / "acme-zendesk.yaml",
        "  token:\n    sandbox: zendesk\n    field: api_token",
        "  token:\n    env: ACME_ZENDESK_TOKEN",
    )
    assert uwf("metadata", "apply", str(metadata)).code == 0
    os.environ["ACME_ZENDESK_TOKEN"] = "not-the-token"
    try:
        result = uwf("connections", "test", "acme-zendesk", "--json")
    finally:
        del os.environ["ACME_ZENDESK_TOKEN"]

    report = json.loads(result.stdout)
    assert result.code == 1
    assert report["ok"] is False
    assert report["status"] == 401
    assert report["problem"].startswith("the CRM refused the credentials (401)")
    assert "Couldn't authenticate you" in report["problem"]
    assert "not-the-token" not in result.stdout + result.stderr


def test_sandbox_serve_serves_one_crm_at_the_root(uwf: Uwf) -> None:
    import httpx

    from tests.conftest import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    env["UWF_HOME"] = str(uwf.home)
    process = subprocess.Popen(
        [*_command(), "sandbox", "serve", "zendesk", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                refused = httpx.get(f"{base}/api/v2/tickets/123.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        creds = json.loads(uwf("sandbox", "accounts").stdout)["zendesk"]
        ticket = httpx.get(
            f"{base}/api/v2/tickets/123.json",
            auth=(f"{creds['email']}/token", creds["api_token"]),
        )
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()
    assert refused.status_code == 401
    assert refused.json() == {"error": "Couldn't authenticate you"}
    assert ticket.json()["ticket"]["id"] == 123


def test_sandbox_serve_an_unknown_crm(uwf: Uwf) -> None:
    result = uwf("sandbox", "serve", "pipedrive")
    assert result.code == 2
    assert "no sandbox for 'pipedrive' (known: zendesk" in result.err


def test_dead_letters_are_listed_and_replayed(uwf: Uwf) -> None:
    failed = uwf(
        "run",
        "escalate_case",
        "--tenant",
        "acme",
        "--input",
        '{"case_id": 999992, "priority": "P1"}',
    )
    execution_id = json.loads(failed.stdout)["id"]
    assert failed.code == 1

    cancel = uwf("executions", "cancel", execution_id)
    replay = uwf("executions", "replay", execution_id)
    succeeded_replay = uwf("executions", "replay", "--from-step", "nope", execution_id)

    assert cancel.code == 1
    assert "already ended (failed); nothing to cancel" in cancel.err
    assert replay.code == 0
    old, new = replay.stdout.strip().split(" -> ")
    assert old == execution_id
    listed = json.loads(uwf("executions", "list", "--json").stdout)
    assert {e["id"]: e["status"] for e in listed}[new] == "queued"  # no worker here to run it
    assert succeeded_replay.code == 1
    assert "'nope' is not a step of 'escalate_case'" in succeeded_replay.err
    assert uwf("executions", "list", "--dead", "--json").stdout.strip() == "[]"


def test_versions_are_listed_and_diffed(uwf: Uwf, metadata: Path) -> None:
    assert uwf("metadata", "apply", str(metadata)).code == 0
    replace_once(metadata / "acme-zendesk.yaml", "P4: low", "P4: normal")
    assert uwf("metadata", "apply", str(metadata)).code == 0

    versions = uwf("metadata", "versions")
    diff = uwf("metadata", "diff", "1", "2")
    missing = uwf("metadata", "diff", "1", "9")

    assert [line.split()[0] for line in versions.stdout.splitlines()] == ["1", "2"]
    assert diff.code == 0
    assert "--- version 1\n+++ version 2\n" in diff.stdout
    assert "-  P4: low\n+  P4: normal\n" in diff.stdout
    assert missing.code == 1
    assert "no metadata version 9" in missing.err
