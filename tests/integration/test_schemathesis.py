"""Schemathesis against the live API's own `/openapi.json`: no 5xx, no response off its schema.

The run is bounded (a fixed seed, a few examples per operation) so it finishes in well under
two minutes; path parameters are pinned to a real tenant, connection and execution, so the
generated requests reach the handlers instead of stopping at `404 unknown tenant`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer


def test_the_api_has_no_server_errors_and_answers_as_its_schema_says(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with live_server.client() as client:
        submitted = client.post(
            "/v1/tenants/acme/actions",
            params={"wait": 20},
            json={"workflow": "escalate_case", "input": {"case_id": 1, "priority": "P2"}},
        )
    assert submitted.status_code in (200, 202), submitted.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        'tenant = "acme"\n'
        'name = "acme-zendesk"\n'
        f'execution_id = "{submitted.json()["id"]}"\n'
    )
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{live_server.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {live_server.admin_key}",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--seed",
            "20261122",
            "--wait-for-schema",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "No issues found" in output, output
