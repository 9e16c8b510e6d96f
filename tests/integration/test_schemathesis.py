"""Schemathesis against the live API's own `/openapi.json`: no 5xx, no response off its schema.

The run is bounded (a fixed seed, a few examples per operation) so it finishes in well under
two minutes; path parameters are pinned to a real tenant, connection and execution, so the
generated requests reach the handlers instead of stopping at `404 unknown tenant`.

The deployment is configured as its metadata asks: the example webhook trigger's signing
secret is in the environment (without it, deliveries answer `503` by design, so that the CRM
retries them once the operator has set it).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LiveServer


def test_the_api_has_no_server_errors_and_answers_as_its_schema_says(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_ZENDESK_WEBHOOK_SECRET", secrets.token_urlsafe(24))
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
    # Every generated case passed both checks (warnings about test data are not failures).
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None, output
    assert counts.group(1) == counts.group(2), output
    assert int(counts.group(1)) > 100
