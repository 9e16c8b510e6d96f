"""The Salesforce connector's requests against Salesforce's own Postman request templates.

`shared/crm-specs/salesforce/postman/` holds Salesforce's official Postman items (CC0). Every
request the connector sends in a full run of globex's workflow — and the token requests UWF's
OAuth client makes — must match one of them (method and path; the token forms field by field),
unless the request is one the items do not cover and CRM-FACTS.md documents (upsert by external
id), which the sandbox tests assert instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import EXAMPLES
from tests.sandbox_server import serve_sandbox
from uwf.auth import Grant
from uwf.metadata import load_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store

POSTMAN = Path(__file__).resolve().parents[3] / "shared" / "crm-specs" / "salesforce" / "postman"
if not POSTMAN.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{POSTMAN} is required in CI", pytrace=False)
    pytest.skip(f"the published specs are not checked out at {POSTMAN}", allow_module_level=True)

# Documented in CRM-FACTS.md (Salesforce "Upsert") but not among the Postman items.
DOCUMENTED_ELSEWHERE = [
    ("PATCH", re.compile(r"^/services/data/v\d+\.\d/sobjects/Case/UWF_Key__c/[^/]+$"))
]
OPEN_CASE = """
kind: workflow
name: open_case
tenant: globex
connection: globex-salesforce
input_schema: {type: object}
steps:
  - id: created
    type: create_record
    object: case
    fields:
      subject: "{{ input.subject }}"
      priority: High
"""


def _items() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(POSTMAN.rglob("*.json"))]


def _pattern(url: str) -> re.Pattern[str]:
    path = url.split("?", 1)[0]
    path = re.sub(r"^\{\{_endpoint\}\}|^\{\{url\}\}\{\{site\}\}", "", path)
    path = re.escape(path.rstrip("/"))
    path = path.replace(re.escape("v{{version}}"), r"v\d+\.\d")
    path = re.sub(r"<SOBJECT_API_NAME>", r"[A-Za-z_]+", path)
    path = re.sub(r"<[A-Z_]+>", r"[^/]+", path)
    return re.compile(f"^{path}/?$")


ROUTES = [(item["method"], _pattern(item["url"]), item["name"]) for item in _items()]


def _matches(method: str, path: str) -> list[str]:
    return [name for m, pattern, name in ROUTES if m == method and pattern.match(path)]


async def test_every_request_of_a_run_is_a_postman_item(tmp_path: Path) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, directory)
    (directory / "zz_open_case.yaml").write_text(OPEN_CASE)
    with serve_sandbox(tmp_path / "home", "salesforce") as sandbox:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
        version, _ = await store.apply_metadata(load_directory(directory), "postman")
        ids = []
        for workflow, data in (
            (
                "escalate_case",
                {
                    "case_id": "5005g000000001zAAA",
                    "priority": "P2",
                    "owner_email": "bob@acme.test",
                    "reason": "postman check",
                },
            ),
            ("open_case", {"subject": "Printer on fire"}),
        ):
            execution, _ = await store.create_execution(
                tenant="globex", workflow=workflow, metadata_version=version, input=data
            )
            ids.append(execution.id)
        executor = make_executor(Settings(home=sandbox.home), store, sandbox.url.rsplit("/", 1)[0])
        await executor.run_until_idle(60)
        await executor.runtime.close()
        requests = []
        for execution_id in ids:
            final = await store.get_execution(execution_id)
            assert final is not None
            assert final.status == "succeeded", final.error
            requests += [r.request for r in await store.step_runs(execution_id) if r.request]
        await store.close()

    sent = [
        (r["method"], urlsplit(r["url"]).path.removeprefix("/sandbox/salesforce"))
        for r in requests
        if "method" in r
    ]
    assert len(sent) == 5
    for method, path in sent:
        covered = _matches(method, path)
        documented = any(m == method and p.match(path) for m, p in DOCUMENTED_ELSEWHERE)
        assert covered or documented, f"{method} {path} matches no Postman item"
    assert any(_matches(m, p) == ["Query"] for m, p in sent)  # the owner lookup is a SOQL query


@pytest.mark.parametrize(
    ("item", "grant"),
    [
        (
            "JWT Bearer Token Flow",
            Grant(
                "jwt_bearer",
                "https://x",
                "consumer-key",
                username="u@x",
                audience="https://login.salesforce.com",
                private_key="",
            ),
        ),
        (
            "Refresh Token",
            Grant(
                "oauth2_refresh_token",
                "https://x",
                "consumer-key",
                client_secret="s",
                refresh_token="r",
            ),
        ),
        (
            "OAuth Username Password",
            Grant(
                "oauth2_password",
                "https://x",
                "consumer-key",
                client_secret="s",
                username="u",
                password="p",
            ),
        ),
    ],
)
def test_token_requests_have_the_postman_items_fields(item: str, grant: Grant) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if grant.auth_type == "jwt_bearer":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        grant = Grant(
            "jwt_bearer",
            "https://x",
            "consumer-key",
            username="u@x",
            audience="https://login.salesforce.com",
            private_key=pem,
        )
    [template] = [i for i in _items() if i["name"] == item]
    expected = {d["key"]: d["value"] for d in template["data"]}
    form = grant.form(None)

    assert template["method"] == "POST"
    assert template["url"].endswith("/services/oauth2/token")
    assert set(form) == set(expected)
    assert form["grant_type"] == expected["grant_type"]
