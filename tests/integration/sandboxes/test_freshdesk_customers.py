"""Freshdesk sandbox companies and contacts over real HTTP: what an integration would notice.

Bodies are checked against Freshdesk's documented shapes: 400 ``Validation failed`` listing
every field, 409 ``duplicate_value`` for what must be unique (with ``additional_info.user_id``
for contacts), 404 with no body, 401 ``invalid_credentials``.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from freshdesk.api import API
from freshdesk.v2.errors import FreshdeskBadRequest, FreshdeskError, FreshdeskNotFound

from uwf.sandboxes import sandbox_credentials

from .conftest import RunningSandbox, serve_sandbox
from .test_freshdesk_sandbox import NOT_LOGGED_IN, fd_client, validation

DAVE, CUSTOMER_INC, ACME = 43000000101, 43000000401, 43000000402


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """A Freshdesk server of this module's own: its records are not the ticket tests'."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "freshdesk") as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with fd_client(sandbox) as c:
        yield c


def _tag() -> str:
    return secrets.token_hex(3)


# --------------------------------------------------------------------------- companies


def test_seed_companies_and_their_contacts(client: httpx.Client) -> None:
    acme = client.get(f"/companies/{ACME}").json()
    assert acme["name"] == "Acme Corporation"
    assert acme["domains"] == ["acme-corp.test"]
    assert acme["industry"] == "Manufacturing"
    assert acme["custom_fields"] == {"contract_number": None, "region": None}
    [dave] = client.get("/contacts", params={"email": "dave@customer.test"}).json()
    assert dave["company_id"] == CUSTOMER_INC
    assert dave["phone"] == "+1 415 555 0101"
    assert dave["job_title"] == "Office manager"
    staff = client.get("/contacts", params={"company_id": CUSTOMER_INC}).json()
    assert {c["email"] for c in staff} == {"dave@customer.test", "erin@customer.test"}


def test_company_create_is_201_and_read_back(client: httpx.Client) -> None:
    name = f"Initrode {_tag()}"
    body = {"name": name, "description": "Staplers", "domains": ["Initrode.test"],
            "industry": "Software", "custom_fields": {"region": "EMEA"}}  # fmt: skip
    created = client.post("/companies", json=body)
    assert created.status_code == 201, created.text
    company = created.json()
    assert created.headers["location"].endswith(f"/api/v2/companies/{company['id']}")
    assert company["domains"] == ["initrode.test"]
    updated = client.put(f"/companies/{company['id']}", json={"note": "Key account"})
    assert updated.status_code == 200
    again = client.get(f"/companies/{company['id']}").json()
    assert again["note"] == "Key account"
    assert again["custom_fields"]["region"] == "EMEA"  # custom fields merge on update
    assert again["name"] == name


def test_company_without_a_name_lists_every_error(client: httpx.Client) -> None:
    response = client.post("/companies", json={"industry": "Mining", "website": "x.test"})
    assert response.status_code == 400
    industries = "Manufacturing,Retail,Software,Finance,Healthcare,Other"
    assert response.json() == validation(
        ("industry", f"It should be one of these values: '{industries}'", "invalid_value"),
        ("website", "Unexpected/invalid field in request", "invalid_field"),
        ("name", "It should be a/an String", "missing_field"),
    )


@pytest.mark.parametrize("name", ["Acme Corporation", "ACME corporation"])
def test_company_names_are_unique_409(client: httpx.Client, name: str) -> None:
    response = client.post("/companies", json={"name": name})
    assert response.status_code == 409
    assert response.json() == {
        "description": "Validation failed",
        "errors": [
            {"field": "name", "message": "It should be a unique value", "code": "duplicate_value"}
        ],
    }
    renamed = client.put(f"/companies/{CUSTOMER_INC}", json={"name": name})
    assert renamed.status_code == 409
    assert client.get(f"/companies/{CUSTOMER_INC}").json()["name"] == "Customer Inc."


def test_company_autocomplete_matches_word_prefixes(client: httpx.Client) -> None:
    def names(typed: str) -> list[str]:
        response = client.get("/companies/autocomplete", params={"name": typed})
        assert response.status_code == 200
        assert all(set(c) == {"id", "name"} for c in response.json()["companies"])
        return [c["name"] for c in response.json()["companies"]]

    assert names("acme") == ["Acme Corporation"]
    assert names("Co") == ["Acme Corporation"]
    assert names("cme") == []
    assert names("orporation") == []
    missing = client.get("/companies/autocomplete")
    assert missing.status_code == 400
    assert missing.json() == validation(("name", "It should be a/an String", "missing_field"))


def test_company_list_paginates_with_link(client: httpx.Client) -> None:
    first = client.get("/companies", params={"per_page": 2})
    assert len(first.json()) == 2
    assert 'rel="next"' in first.headers["link"]
    assert first.headers["x-ratelimit-remaining"]


def test_company_fields_describe_defaults_and_custom(client: httpx.Client) -> None:
    fields = {f["name"]: f for f in client.get("/company_fields").json()}
    assert fields["name"]["required_for_agent"] is True
    assert fields["name"]["type"] == "default_name"
    assert fields["account_tier"]["choices"] == ["Basic", "Premium", "Enterprise"]
    assert fields["region"]["default"] is False
    assert fields["region"]["choices"] == ["EMEA", "AMER", "APAC"]


# --------------------------------------------------------------------------- contacts


def test_contact_create_update_and_filters(client: httpx.Client) -> None:
    tag = _tag()
    body = {"name": f"Fox Mulder {tag}", "email": f"Fox.{tag}@FBI.test", "job_title": "Agent",
            "company_id": ACME, "unique_external_id": f"ext-{tag}"}  # fmt: skip
    created = client.post("/contacts", json=body)
    assert created.status_code == 201, created.text
    contact = created.json()
    assert contact["email"] == f"fox.{tag}@fbi.test"  # Freshdesk keeps emails in lower case
    assert contact["company_id"] == ACME
    by_external = client.get("/contacts", params={"unique_external_id": f"ext-{tag}"}).json()
    assert [c["id"] for c in by_external] == [contact["id"]]
    assert client.get("/contacts", params={"unique_external_id": f"EXT-{tag}"}).json() == []
    client.put(f"/contacts/{contact['id']}", json={"mobile": "+1 202 555 0199"})
    assert client.get(f"/contacts/{contact['id']}").json()["mobile"] == "+1 202 555 0199"


def test_contact_create_lists_every_missing_field(client: httpx.Client) -> None:
    response = client.post("/contacts", json={"company_id": 1, "first_name": "Dana"})
    assert response.status_code == 400
    identifiers = "email, mobile, phone, twitter_id, unique_external_id"
    assert response.json() == validation(
        ("company_id", "There is no company matching the given company_id", "invalid_value"),
        ("first_name", "Unexpected/invalid field in request", "invalid_field"),
        ("name", "It should be a/an String", "missing_field"),
        ("email", f"Please fill at least 1 of {identifiers} fields", "missing_field"),
    )


@pytest.mark.parametrize("email", ["dave@customer.test", "DAVE@customer.test"])
def test_contact_email_is_unique_409_naming_the_holder(client: httpx.Client, email: str) -> None:
    response = client.post("/contacts", json={"name": "Dave Again", "email": email})
    assert response.status_code == 409
    assert response.json() == {
        "description": "Validation failed",
        "errors": [
            {
                "field": "email",
                "additional_info": {"user_id": DAVE},
                "message": "It should be a unique value",
                "code": "duplicate_value",
            }
        ],
    }


def test_contact_external_id_is_unique_409(client: httpx.Client) -> None:
    tag = _tag()
    first = client.post("/contacts", json={"name": "One", "unique_external_id": f"k-{tag}"})
    assert first.status_code == 201
    second = client.post("/contacts", json={"name": "Two", "unique_external_id": f"k-{tag}"})
    assert second.status_code == 409
    [entry] = second.json()["errors"]
    assert entry["field"] == "unique_external_id"
    assert entry["code"] == "duplicate_value"
    assert entry["additional_info"] == {"user_id": first.json()["id"]}


def test_empty_contact_update_is_400_missing_params(client: httpx.Client) -> None:
    response = client.put(f"/contacts/{DAVE}", json={})
    assert response.status_code == 400
    assert response.json()["code"] == "missing_params"


def test_contact_fields_describe_defaults_and_custom(client: httpx.Client) -> None:
    fields = {f["name"]: f for f in client.get("/contact_fields").json()}
    assert fields["name"]["required_for_agents"] is True
    assert fields["company_name"]["type"] == "default_company_name"
    assert fields["department"]["type"] == "custom_text"
    assert fields["department"]["default"] is False


def test_python_freshdesk_client_manages_companies_and_contacts(sandbox: RunningSandbox) -> None:
    # The library's create_contact sends view_all_tickets and a description of its own.
    api = API(sandbox.credentials["domain"], sandbox.credentials["api_key"])
    api._api_prefix = f"{sandbox.url}/api/v2/"
    tag = _tag()

    company = api.companies.create_company(name=f"Hooli XYZ {tag}", domains=[f"{tag}.test"])
    assert api.companies.get_company(company.id).domains == [f"{tag}.test"]
    assert api.companies.update_company(company.id, industry="Software").industry == "Software"
    assert company.id in [c.id for c in api.companies.list_companies()]
    person = api.contacts.create_contact(
        name=f"Nelson Bighetti {tag}", email=f"bighead.{tag}@hooli.test", company_id=company.id
    )
    assert (person.description, person.view_all_tickets) == ("Freshdesk Contact", False)
    [found] = api.contacts.list_contacts(email=f"bighead.{tag}@hooli.test")
    assert found.company_id == company.id
    assert api.contacts.update_contact(person.id, job_title="Dean").job_title == "Dean"

    with pytest.raises(FreshdeskError, match="409"):
        api.companies.create_company(name=f"hooli xyz {tag}")
    with pytest.raises(FreshdeskBadRequest, match="Validation failed"):
        api.contacts.create_contact(email=f"nameless.{tag}@hooli.test")
    with pytest.raises(FreshdeskNotFound):
        api.contacts.get_contact(999)


def test_viewing_all_tickets_needs_a_company(client: httpx.Client) -> None:
    body = {"name": "Jared Dunn", "email": f"jared.{_tag()}@hooli.test", "view_all_tickets": True}
    response = client.post("/contacts", json=body)
    assert response.status_code == 400
    assert response.json() == validation(
        ("company_id", "Company ID is required for a contact to view all tickets", "missing_field")
    )
    made = client.post("/contacts", json={**body, "company_id": ACME})
    assert made.status_code == 201
    assert made.json()["view_all_tickets"] is True


# --------------------------------------------------------------------------- 404 and 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/companies/999"),
        ("PUT", "/companies/999"),
        ("GET", "/contacts/999"),
        ("PUT", "/contacts/999"),
    ],
)
def test_unknown_company_or_contact_is_404_with_an_empty_body(
    client: httpx.Client, method: str, path: str
) -> None:
    # An update of a record that does not exist is 404 before its body is validated.
    response = client.request(method, path, json={"bogus": 1} if method == "PUT" else None)
    assert response.status_code == 404
    assert response.content == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/companies"), ("POST", "/contacts"), ("GET", "/contact_fields")],
)
@pytest.mark.parametrize("auth", [None, ("wrong-key", "X")])
def test_bad_credentials_are_401(
    sandbox: RunningSandbox, method: str, path: str, auth: tuple[str, str] | None
) -> None:
    with httpx.Client(base_url=f"{sandbox.url}/api/v2", auth=auth, timeout=10) as stranger:
        response = stranger.request(method, path, json={"name": "X"} if method == "POST" else None)
    assert response.status_code == 401
    assert response.json() == NOT_LOGGED_IN


# --------------------------------------------------------------------------- upgrade


def test_a_database_made_before_companies_gains_the_contact_columns(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sandbox_credentials(home, "freshdesk")  # creates and seeds the file
    path = home / "sandboxes" / "freshdesk.sqlite3"
    with sqlite3.connect(path) as conn:  # the contacts table as it was before companies
        conn.execute("DROP INDEX contacts_by_external_id")
        conn.execute("CREATE TABLE old AS SELECT id, name, email, password_hash, active, "
                     "created_at, updated_at FROM contacts")  # fmt: skip
        conn.execute("DROP TABLE contacts")
        conn.execute("ALTER TABLE old RENAME TO contacts")
    with serve_sandbox(home, "freshdesk") as running, fd_client(running) as c:
        dave = c.get(f"/contacts/{DAVE}")
        assert dave.status_code == 200
        assert dave.json()["phone"] is None
        made = c.post("/contacts", json={"name": "New", "unique_external_id": "k1"})
        assert made.status_code == 201, made.text
