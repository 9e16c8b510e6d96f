"""`uwf connections describe` on Freshdesk companies and contacts, read live from the sandbox.

The connector spec's `describe` blocks turn `/company_fields` and `/contact_fields` into the
names a write uses (a custom field as `custom_fields/<name>`, the contact's company as
`company_id`) and mark which of them the canonical model maps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import Uwf


@pytest.fixture
def uwf(tmp_path: Path) -> Uwf:
    return Uwf(tmp_path / "home")


def test_describe_accounts_reads_company_fields(uwf: Uwf) -> None:
    result = uwf("connections", "describe", "hooli-freshdesk", "--object", "account", "--json")

    assert result.code == 0, result.err
    fields = {f["name"]: f for f in result.json()["fields"]}
    assert fields["name"]["canonical"] == "name"
    assert fields["name"]["required"] is True
    assert fields["industry"]["canonical"] == "industry"
    assert "Software" in [o["value"] for o in fields["industry"]["options"]]
    region = fields["custom_fields/region"]
    assert region["canonical"] is None
    assert [o["value"] for o in region["options"]] == ["EMEA", "AMER", "APAC"]


def test_describe_contacts_reads_contact_fields(uwf: Uwf) -> None:
    result = uwf("connections", "describe", "hooli-freshdesk", "--object", "contact", "--json")

    assert result.code == 0, result.err
    fields = {f["name"]: f for f in result.json()["fields"]}
    assert fields["company_id"]["canonical"] == "account_id"
    assert fields["job_title"]["canonical"] == "title"
    assert fields["email"]["canonical"] == "email"
    assert fields["name"]["required"] is True
    assert fields["custom_fields/department"]["type"] == "custom_text"
    assert "company_name" not in fields  # listed under the name a write uses
