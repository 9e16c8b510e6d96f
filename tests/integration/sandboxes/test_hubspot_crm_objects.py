"""The HubSpot sandbox's companies and contacts over real HTTP, as an integration sees them.

Records persist for the whole module (one server), so each test makes or picks its own.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningSandbox, serve_sandbox

ALICE, BOB = 41000002, 41000003
COMPANIES, CONTACTS = "/crm/v3/objects/companies", "/crm/v3/objects/contacts"
TICKETS_PATH = "/crm/v3/objects/tickets"
CONTACT_TO_COMPANY = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]
PRIMARY = {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}
UNLABELED = {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": None}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Overrides the package's Zendesk sandbox: one HubSpot server per module."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "hubspot") as running:
        yield running


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sandbox.credentials['private_app_token']}"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=10) as client:
        yield client


def tag() -> str:
    return secrets.token_hex(3)


def new_contact(api: httpx.Client, **props: str) -> dict[str, Any]:
    response = api.post(CONTACTS, json={"properties": props})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def property_error(response: httpx.Response) -> dict[str, Any]:
    """The one per-property error HubSpot serialises into a 400's message."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    [error] = json.loads(body["message"].removeprefix("Property values were not valid: "))
    result: dict[str, Any] = error
    return result


# --------------------------------------------------------------------------- seed, reads


def test_seeded_company_reads_back_as_strings(api: httpx.Client) -> None:
    default = api.get(f"{COMPANIES}/6101").json()
    assert set(default["properties"]) == {
        "createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"
    }  # fmt: skip
    assert default["properties"]["name"] == "Acme Corporation"
    assert default["properties"]["hs_object_id"] == "6101"
    wanted = "industry,numberofemployees,hubspot_owner_id,city"
    props = api.get(f"{COMPANIES}/6101", params={"properties": wanted}).json()["properties"]
    assert props == {
        "industry": "COMPUTER_SOFTWARE", "numberofemployees": "50",
        "hubspot_owner_id": str(ALICE), "city": "San Francisco",
    }  # fmt: skip


def test_seeded_contact_defaults_and_primary_company(api: httpx.Client) -> None:
    contact = api.get(f"{CONTACTS}/7101", params={"associations": "companies"}).json()
    # Contacts keep their own modification-time property: lastmodifieddate.
    assert set(contact["properties"]) == {
        "createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"
    }  # fmt: skip
    assert contact["properties"]["email"] == "wile.coyote@acme.test"
    links = contact["associations"]["companies"]["results"]
    assert links == [
        {"id": "6101", "type": "contact_to_company"},
        {"id": "6101", "type": "contact_to_company_unlabeled"},
    ]
    wanted = {"properties": "associatedcompanyid,jobtitle"}
    assert api.get(f"{CONTACTS}/7101", params=wanted).json()["properties"] == {
        "associatedcompanyid": "6101", "jobtitle": "Head of Procurement"
    }  # fmt: skip
    from_company = api.get("/crm/v4/objects/companies/6101/associations/contacts").json()
    assert [r["toObjectId"] for r in from_company["results"]] == [7101, 7102]
    assert from_company["results"][0]["associationTypes"] == [
        {"category": "HUBSPOT_DEFINED", "typeId": 2, "label": "Primary"},
        {"category": "HUBSPOT_DEFINED", "typeId": 280, "label": None},
    ]


def test_contact_list_pages_with_after(api: httpx.Client) -> None:
    url: str | None = f"{CONTACTS}?limit=3&properties=email"
    ids: list[str] = []
    while url:
        page = api.get(url).json()
        ids += [c["id"] for c in page["results"]]
        assert all(set(c["properties"]) == {"email"} for c in page["results"])
        url = page.get("paging", {}).get("next", {}).get("link")
    seeded = [str(n) for n in range(7101, 7109)]
    assert ids[:8] == seeded
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- writes


def test_create_update_and_associate_by_associatedcompanyid(api: httpx.Client) -> None:
    key = tag()
    company = api.post(COMPANIES, json={"properties": {"name": f"Vandelay {key}",
                                                       "domain": f"vandelay-{key}.test",
                                                       "numberofemployees": 12}})  # fmt: skip
    assert company.status_code == 201
    company_id = company.json()["id"]
    assert int(company_id) >= 6501
    assert company.json()["properties"]["numberofemployees"] == "12"  # a string on the way out

    contact = new_contact(
        api,
        firstname="Art",
        lastname=f"Vandelay {key}",
        email=f"art.{key}@vandelay.test",
        associatedcompanyid=company_id,
    )
    linked = api.get(f"/crm/v4/objects/contacts/{contact['id']}/associations/companies").json()
    assert linked["results"] == [
        {"toObjectId": int(company_id), "associationTypes": [PRIMARY, UNLABELED]}
    ]

    changes = {"associatedcompanyid": "6102", "jobtitle": "Importer"}
    moved = api.patch(f"{CONTACTS}/{contact['id']}", json={"properties": changes})
    assert moved.status_code == 200
    assert moved.json()["properties"]["associatedcompanyid"] == "6102"
    linked = api.get(f"/crm/v4/objects/contacts/{contact['id']}/associations/companies").json()
    # The new company is primary; the old one stays, unlabelled.
    assert linked["results"] == [
        {"toObjectId": 6102, "associationTypes": [PRIMARY, UNLABELED]},
        {"toObjectId": int(company_id), "associationTypes": [UNLABELED]},
    ]


def test_create_with_an_association_in_the_body(api: httpx.Client) -> None:
    body = {
        "properties": {"firstname": "Kel", "lastname": f"Varnsen {tag()}"},
        "associations": [{"to": {"id": "6103"}, "types": CONTACT_TO_COMPANY}],
    }
    created = api.post(CONTACTS, json=body)
    assert created.status_code == 201
    linked = api.get(f"/crm/v4/objects/contacts/{created.json()['id']}/associations/companies")
    assert linked.json()["results"] == [{"toObjectId": 6103, "associationTypes": [UNLABELED]}]
    wrong = {**body, "associations": [{"to": {"id": "999999"}, "types": CONTACT_TO_COMPANY}]}
    refused = api.post(CONTACTS, json=wrong)
    assert refused.status_code == 400
    assert refused.json()["category"] == "VALIDATION_ERROR"


def test_a_contact_email_is_unique_409_conflict(api: httpx.Client) -> None:
    response = api.post(CONTACTS, json={"properties": {"email": "WILE.coyote@acme.test"}})
    assert response.status_code == 409
    body = response.json()
    assert {k: body[k] for k in ("status", "message", "category")} == {
        "status": "error",
        "message": "Contact already exists. Existing ID: 7101",
        "category": "CONFLICT",
    }
    assert body["correlationId"] == response.headers["x-hubspot-correlation-id"]
    by_email = api.get(f"{CONTACTS}/wile.coyote@acme.test", params={"idProperty": "email"})
    assert by_email.json()["id"] == "7101"
    # Changing another contact's email to a taken one is refused the same way.
    taken = api.patch(f"{CONTACTS}/7102", json={"properties": {"email": "wile.coyote@acme.test"}})
    assert taken.status_code == 409
    # Companies may share a domain: HubSpot does not deduplicate them through the API.
    twin = api.post(COMPANIES, json={"properties": {"name": "Acme again", "domain": "acme.test"}})
    assert twin.status_code == 201


def test_batch_upsert_by_uwf_key_makes_one_contact(api: httpx.Client) -> None:
    key = tag()
    props = {"firstname": "Dana", "lastname": "Scully", "email": f"dana.{key}@fbi.test"}
    body = {"inputs": [{"idProperty": "uwf_key", "id": f"exec-{key}:create", "properties": props}]}
    first = api.post(f"{CONTACTS}/batch/upsert", json=body)
    again = api.post(f"{CONTACTS}/batch/upsert", json=body)
    assert (first.status_code, again.status_code) == (200, 200)
    one, two = first.json()["results"][0], again.json()["results"][0]
    assert (one["new"], two["new"], one["id"]) == (True, False, two["id"])
    assert one["properties"]["uwf_key"] == f"exec-{key}:create"
    found = api.post(f"{CONTACTS}/search", json={"filterGroups": [{"filters": [
        {"propertyName": "email", "operator": "EQ", "value": props["email"]}]}]})  # fmt: skip
    assert [r["id"] for r in found.json()["results"]] == [one["id"]]


@pytest.mark.parametrize(
    ("path", "props", "code", "message"),
    [
        (CONTACTS, {"email": "not-an-email"}, "INVALID_EMAIL",
         "Email address not-an-email is invalid"),
        (COMPANIES, {"industry": "SPACE"}, "INVALID_OPTION",
         "SPACE was not one of the allowed options: [ACCOUNTING, BANKING, COMPUTER_SOFTWARE, "
         "CONSTRUCTION, FINANCIAL_SERVICES, HOSPITAL_HEALTH_CARE, "
         "INFORMATION_TECHNOLOGY_AND_SERVICES, INSURANCE, LOGISTICS_AND_SUPPLY_CHAIN, "
         "MANAGEMENT_CONSULTING, RETAIL, TELECOMMUNICATIONS, UTILITIES]"),
        (COMPANIES, {"numberofemployees": "lots"}, "INVALID_DECIMAL",
         "lots was not a valid number"),
        (CONTACTS, {"associatedcompanyid": "999999"}, "INVALID_COMPANY_ID",
         "999999 is not a valid company id"),
        (CONTACTS, {"lastmodifieddate": "0"}, "READ_ONLY_VALUE",
         '"lastmodifieddate" is a read only property; its value cannot be set.'),
    ],
)  # fmt: skip
def test_invalid_values_are_400_validation_error(
    api: httpx.Client, path: str, props: dict[str, str], code: str, message: str
) -> None:
    error = property_error(api.post(path, json={"properties": props}))
    assert (error["error"], error["message"], error["name"]) == (code, message, next(iter(props)))
    if code == "INVALID_EMAIL":  # as real answers quote it: these four keys only
        assert set(error) == {"isValid", "message", "error", "name"}


def test_missing_request_fields_unknown_ids_and_auth(sandbox: RunningSandbox) -> None:
    token = sandbox.credentials["private_app_token"]
    with httpx.Client(base_url=sandbox.url, timeout=10) as anonymous:
        refused = anonymous.get(f"{CONTACTS}/7101")
        assert refused.status_code == 401
        assert refused.json()["category"] == "INVALID_AUTHENTICATION"
        headers = {"Authorization": f"Bearer {token}"}
        no_key = anonymous.post(
            f"{COMPANIES}/batch/upsert",
            json={"inputs": [{"id": "k", "properties": {"name": "x"}}]},
            headers=headers,
        )
        assert no_key.status_code == 400
        assert no_key.json()["message"] == "Some required fields were not set: [idProperty, id]"
        no_props = anonymous.patch(f"{COMPANIES}/6101", json={}, headers=headers)
        assert no_props.json()["message"] == "Some required fields were not set: [properties]"
        for path in (f"{COMPANIES}/999999", f"{CONTACTS}/123456789"):
            missing = anonymous.get(path, headers=headers)
            assert missing.status_code == 404
            assert missing.json()["message"] == "resource not found"
        by_domain = anonymous.get(
            f"{COMPANIES}/acme.test", params={"idProperty": "domain"}, headers=headers
        )
        assert by_domain.status_code == 400  # domain is not a unique property
        assert by_domain.json()["message"] == (
            "domain is not a unique identifier property for COMPANY"
        )


# --------------------------------------------------------------------------- search, describe


def test_search_by_association_and_sort(api: httpx.Client) -> None:
    by_company = {"propertyName": "associations.company", "operator": "EQ", "value": "6103"}
    found = api.post(f"{CONTACTS}/search", json={
        "filterGroups": [{"filters": [by_company]}],
        "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}],
        "properties": ["lastname"],
    }).json()  # fmt: skip
    assert [r["properties"]["lastname"] for r in found["results"]][-2:] == ["Waddams", "Gibbons"]
    assert found["total"] >= 2
    by_name = {"propertyName": "name", "operator": "EQ", "value": "globex ltd"}
    companies = api.post(f"{COMPANIES}/search", json={"filterGroups": [{"filters": [by_name]}]})
    [globex] = companies.json()["results"]
    assert globex["id"] == "6102"
    assert set(globex["properties"]) == {
        "createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"
    }  # fmt: skip


def test_a_tickets_notes_by_association_newest_first(api: httpx.Client) -> None:
    """What `comment.lookup` sends: notes associated to one ticket, by `hs_timestamp` desc."""
    to_ticket = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 228}]
    made = []
    for body, at in (("older", "2024-06-01T12:00:00Z"), ("newer", "2024-06-02T12:00:00Z")):
        note = {"properties": {"hs_note_body": body, "hs_timestamp": at},
                "associations": [{"to": {"id": "1109"}, "types": to_ticket}]}  # fmt: skip
        made.append(api.post("/crm/v3/objects/notes", json=note).json()["id"])
    on_ticket = {"propertyName": "associations.ticket", "operator": "EQ", "value": "1109"}
    found = api.post("/crm/v3/objects/notes/search", json={
        "filterGroups": [{"filters": [on_ticket]}],
        "sorts": [{"propertyName": "hs_timestamp", "direction": "DESCENDING"}],
        "properties": ["hs_note_body"],
    }).json()  # fmt: skip
    # Ticket 1109's seeded note (8009, January 2024) comes last.
    assert [r["id"] for r in found["results"]] == [*made[::-1], "8009"]
    assert found["results"][0]["properties"] == {"hs_note_body": "newer"}
    elsewhere = {**on_ticket, "value": "1110"}
    other = api.post(
        "/crm/v3/objects/notes/search", json={"filterGroups": [{"filters": [elsewhere]}]}
    )
    assert set(made).isdisjoint(r["id"] for r in other.json()["results"])


def test_company_and_contact_properties_describe(api: httpx.Client) -> None:
    companies = {p["name"]: p for p in api.get("/crm/v3/properties/companies").json()["results"]}
    industry = companies["industry"]
    assert (industry["type"], industry["fieldType"]) == ("enumeration", "select")
    assert {"value": "RETAIL", "label": "Retail"}.items() <= industry["options"][10].items()
    assert companies["uwf_key"]["hasUniqueValue"] is True
    assert companies["domain"]["hasUniqueValue"] is False
    contacts = {p["name"]: p for p in api.get("/crm/v3/properties/contacts").json()["results"]}
    assert contacts["lastmodifieddate"]["modificationMetadata"]["readOnlyValue"] is True
    assert contacts["associatedcompanyid"]["type"] == "number"
    assert "hs_lastmodifieddate" not in contacts


def test_hubspot_api_client_companies_and_contacts(sandbox: RunningSandbox) -> None:
    """HubSpot's own Python library reads what the sandbox answers for these objects."""
    import hubspot  # type: ignore[import-untyped]
    from hubspot.crm.contacts import (  # type: ignore[import-untyped]
        ApiException,
        BatchInputSimplePublicObjectBatchInputUpsert,
        SimplePublicObjectBatchInputUpsert,
        SimplePublicObjectInputForCreate,
    )

    client = hubspot.HubSpot(access_token=sandbox.credentials["private_app_token"],
                             host=sandbox.url)  # fmt: skip
    company = client.crm.companies.basic_api.get_by_id("6104", properties=["name", "phone"])
    assert company.properties == {"name": "Umbrella Health", "phone": "+1 312 555 0142"}
    key = tag()
    made = client.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"email": f"sdk.{key}@umbrella.test",
                                                     "associatedcompanyid": "6104"})
    )  # fmt: skip
    assert made.properties["associatedcompanyid"] == "6104"
    one = SimplePublicObjectBatchInputUpsert(
        id_property="uwf_key", id=f"sdk:{key}", properties={"firstname": "Sdk"}
    )
    upsert = BatchInputSimplePublicObjectBatchInputUpsert(inputs=[one])
    assert [r.new for r in client.crm.contacts.batch_api.upsert(upsert).results] == [True]
    assert [r.new for r in client.crm.contacts.batch_api.upsert(upsert).results] == [False]
    with pytest.raises(ApiException) as taken:
        client.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": f"sdk.{key}@umbrella.test"})
        )
    assert taken.value.status == 409
    assert (
        json.loads(taken.value.body)["message"] == f"Contact already exists. Existing ID: {made.id}"
    )


def test_an_older_sandbox_file_gains_companies_and_contacts(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "hubspot") as first:
        token = first.credentials["private_app_token"]
    # The file as a sandbox from before companies and contacts left it.
    with sqlite3.connect(tmp_path / "sandboxes" / "hubspot.sqlite3") as db:
        db.execute("DELETE FROM objects WHERE type IN ('companies', 'contacts')")
        db.execute("DELETE FROM associations WHERE from_type IN ('companies', 'contacts')")
        db.execute("DELETE FROM sandbox_meta WHERE key = 'companies_seeded'")
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):  # gained once, not again on the next start
        with (
            serve_sandbox(tmp_path, "hubspot") as again,
            httpx.Client(base_url=again.url, headers=headers, timeout=10) as client,
        ):
            companies = client.get(COMPANIES, params={"limit": 100}).json()["results"]
            assert [c["id"] for c in companies] == [str(n) for n in range(6101, 6107)]
            contacts = client.get(CONTACTS, params={"limit": 100}).json()["results"]
            assert len(contacts) == 8
            wanted = {"properties": "associatedcompanyid"}
            assert client.get(f"{CONTACTS}/7104", params=wanted).json()["properties"] == {
                "associatedcompanyid": "6103"
            }
            assert len(client.get(TICKETS_PATH, params={"limit": 100}).json()["results"]) == 60
