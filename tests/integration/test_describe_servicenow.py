"""`uwf connections describe` of ServiceNow's accounts, contacts and users, as a user runs it:
the live columns come from the sandbox's sys_dictionary and sys_choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import Uwf


@pytest.fixture
def uwf(tmp_path: Path) -> Uwf:
    return Uwf(tmp_path / "home")


def describe(uwf: Uwf, obj: str) -> dict[str, dict[str, Any]]:
    result = uwf("connections", "describe", "initech-servicenow", "--object", obj, "--json")
    assert result.code == 0, result.err
    described = result.json()
    assert described["connection"] == "initech-servicenow"
    return {field["name"]: field for field in described["fields"]}


def test_describe_accounts_contacts_and_users(uwf: Uwf) -> None:
    account = describe(uwf, "account")
    assert account["name"]["canonical"] == "name"
    assert account["name"]["required"] is True
    assert account["notes"]["canonical"] == "description"
    assert account["u_uwf_key"]["label"] == "UWF key"
    assert account["sys_created_on"]["read_only"] is True
    assert [o["value"] for o in account["rank_tier"]["options"]][:2] == ["strategic", "tactical"]
    assert "short_description" not in account  # no task columns: a company is no task

    contact = describe(uwf, "contact")
    # Its own columns and those it inherits from sys_user.
    assert {"account", "u_uwf_key", "email", "user_name"} <= set(contact)
    assert contact["company"]["canonical"] == "account_id"
    assert contact["mobile_phone"]["canonical"] == "mobile"
    assert contact["company"]["type"] == "reference"

    user = describe(uwf, "user")
    assert user["email"]["canonical"] == "email"
    assert "account" not in user  # a contact's column is not every user's
