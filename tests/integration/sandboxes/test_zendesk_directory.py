"""The Zendesk sandbox's organizations, users, field metadata and ticket histories over HTTP.

Error bodies are Zendesk's: RecordInvalid's `details` name the field, its `description`
starts with the field's label and its `error` is Zendesk's code (DuplicateValue for the unique
organization name and user email).
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningSandbox, serve_sandbox

GLOBEX, INITECH, DAVE = 40001, 40002, 20001


def _upsert(client: httpx.Client, kind: str, **fields: Any) -> httpx.Response:
    path = f"/api/v2/{kind}s/create_or_update.json"
    return client.post(path, json={kind: fields})


def _invalid(details: dict[str, Any]) -> dict[str, Any]:
    return {"error": "RecordInvalid", "description": "Record validation errors", "details": details}


# --------------------------------------------------------------------------- organizations


def test_seeded_organizations_page_by_offset(client: httpx.Client) -> None:
    first = client.get("/api/v2/organizations.json", params={"per_page": 2}).json()
    assert first["count"] >= 3
    assert [o["id"] for o in first["organizations"]] == [GLOBEX, INITECH]
    globex = first["organizations"][0]
    assert (globex["name"], globex["external_id"]) == ("Globex Corporation", "crm-acct-0001")
    assert globex["domain_names"] == ["globex.test"]
    assert globex["organization_fields"] == {"account_tier": "enterprise", "renewal_date": None}
    assert globex["url"].endswith("/api/v2/organizations/40001.json")
    second = client.get(first["next_page"]).json()
    assert second["organizations"][0]["name"] == "Umbrella Health"
    assert second["previous_page"]


def test_create_or_update_matches_by_external_id_not_name(client: httpx.Client) -> None:
    tag = secrets.token_hex(3)
    created = _upsert(client, "organization", name=f"Wayne {tag}", external_id=f"k-{tag}")
    assert created.status_code == 201
    org = created.json()["organization"]
    assert created.headers["location"] == org["url"]

    again = _upsert(client, "organization", name=f"Wayne {tag}", external_id=f"K-{tag}", notes="n")
    assert again.status_code == 200  # same record, found by external_id (case-insensitive)
    assert again.json()["organization"]["id"] == org["id"]
    assert again.json()["organization"]["notes"] == "n"

    # Without an external_id nothing matches, and the name is taken (case-insensitively).
    duplicate = _upsert(client, "organization", name=f"WAYNE {tag}")
    assert duplicate.status_code == 422
    text = f"Name: WAYNE {tag} has already been taken"
    assert duplicate.json() == _invalid(
        {"name": [{"description": text, "error": "DuplicateValue"}]}
    )

    found = client.get("/api/v2/organizations/search.json", params={"name": f"wayne {tag}"})
    assert [o["id"] for o in found.json()["organizations"]] == [org["id"]]
    by_key = client.get("/api/v2/organizations/search.json", params={"external_id": f"k-{tag}"})
    assert [o["id"] for o in by_key.json()["organizations"]] == [org["id"]]


def test_organization_without_name_is_422_blank(client: httpx.Client) -> None:
    response = client.post("/api/v2/organizations.json", json={"organization": {"notes": "x"}})
    assert response.status_code == 422
    blank = {"description": "Name: cannot be blank", "error": "BlankValue"}
    assert response.json() == _invalid({"name": [blank]})


def test_update_merges_custom_fields_and_rejects_bad_values(client: httpx.Client) -> None:
    tag = secrets.token_hex(3)
    org = client.post("/api/v2/organizations.json", json={"organization": {"name": tag}}).json()
    path = f"/api/v2/organizations/{org['organization']['id']}.json"
    changes = {"organization_fields": {"account_tier": "premium"}, "tags": ["Gold"]}
    updated = client.put(path, json={"organization": changes}).json()["organization"]
    assert updated["organization_fields"] == {"account_tier": "premium", "renewal_date": None}
    assert updated["tags"] == ["gold"]

    bad = client.put(path, json={"organization": {"organization_fields": {"account_tier": "x"}}})
    assert bad.status_code == 422
    assert list(bad.json()["details"]) == ["organization_fields"]
    assert client.get(path).json()["organization"]["organization_fields"]["account_tier"] == (
        "premium"
    )


def test_organization_search_needs_exactly_one_criterion(client: httpx.Client) -> None:
    for params in ({}, {"name": "Initech", "external_id": "crm-acct-0002"}):
        response = client.get("/api/v2/organizations/search.json", params=params)
        assert response.status_code == 400
        assert response.json()["error"] == "InvalidParameter"


# --------------------------------------------------------------------------- users


def test_user_create_or_update_matches_by_external_id_then_email(client: httpx.Client) -> None:
    tag = secrets.token_hex(3)
    email = f"dana.{tag}@fbi.test"
    created = _upsert(client, "user", name="Dana", email=email, external_id=f"s-{tag}",
                      organization_id=GLOBEX)  # fmt: skip
    assert created.status_code == 201
    user = created.json()["user"]
    assert (user["role"], user["organization_id"], user["email"]) == ("end-user", GLOBEX, email)
    assert created.headers["location"] == user["url"]

    again = _upsert(client, "user", name="Dana S", external_id=f"s-{tag}", phone="+1 555 0199")
    assert again.status_code == 200
    assert again.json()["user"]["id"] == user["id"]
    assert again.json()["user"]["phone"] == "+1 555 0199"

    by_email = _upsert(client, "user", email=email.upper(), external_id=f"t-{tag}")
    assert by_email.status_code == 200
    assert by_email.json()["user"]["id"] == user["id"]
    assert by_email.json()["user"]["external_id"] == f"t-{tag}"

    found = client.get("/api/v2/users/search.json", params={"query": f"email:{email}"}).json()
    assert [u["id"] for u in found["users"]] == [user["id"]]


def test_user_email_is_unique(client: httpx.Client) -> None:
    response = client.post(
        "/api/v2/users.json", json={"user": {"name": "Dave Again", "email": "dave@customer.test"}}
    )
    assert response.status_code == 422
    text = "Email: dave@customer.test is already being used by another user"
    assert response.json() == _invalid(
        {"email": [{"description": text, "error": "DuplicateValue"}]}
    )


def test_new_user_without_name_is_422(client: httpx.Client) -> None:
    response = _upsert(client, "user", email=f"{secrets.token_hex(3)}@fbi.test")
    assert response.status_code == 422
    short = {"description": "Name: is too short (minimum is 1 characters)", "error": "TooShort"}
    assert response.json() == _invalid({"name": [short]})


def test_user_in_an_unknown_organization_is_422(client: httpx.Client) -> None:
    response = client.put(f"/api/v2/users/{DAVE}.json", json={"user": {"organization_id": 9}})
    assert response.status_code == 422
    assert list(response.json()["details"]) == ["organization_id"]
    assert client.get(f"/api/v2/users/{DAVE}.json").json()["user"]["organization_id"] == GLOBEX


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/api/v2/organizations/create_or_update.json", "organization"),
        ("PUT", "/api/v2/organizations/40001.json", "organization"),
        ("POST", "/api/v2/users/create_or_update.json", "user"),
        ("PUT", "/api/v2/users/20001.json", "user"),
    ],
)
def test_body_without_its_object_is_400(
    client: httpx.Client, method: str, path: str, name: str
) -> None:
    response = client.request(method, path, json={"name": "unwrapped"})
    assert response.status_code == 400
    description = f"Parameter {name} is required"
    assert response.json() == {"error": "ParameterMissing", "description": description}


@pytest.mark.parametrize("path", ["/api/v2/organizations/999999.json", "/api/v2/users/999999.json"])
def test_unknown_id_is_404_record_not_found(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "RecordNotFound", "description": "Not found"}
    update = client.put(path, json={"organization": {"name": "x"}, "user": {"name": "x"}})
    assert update.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/organizations.json"),
        ("POST", "/api/v2/organizations/create_or_update.json"),
        ("POST", "/api/v2/users/create_or_update.json"),
        ("GET", "/api/v2/organization_fields.json"),
        ("GET", "/api/v2/user_fields.json"),
        ("GET", "/api/v2/tickets/2/audits.json"),
    ],
)
def test_new_endpoints_need_auth(sandbox: RunningSandbox, method: str, path: str) -> None:
    with sandbox.client("admin@uwf-sandbox.test", "wrong-token") as c:
        response = c.request(method, path, json={"organization": {"name": "never"}})
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


# --------------------------------------------------------------------------- field metadata


@pytest.mark.parametrize(
    ("kind", "system", "custom"),
    [
        ("organization_fields", {"name", "details", "notes"}, {"account_tier", "renewal_date"}),
        ("user_fields", {"name", "email", "phone"}, {"customer_since", "vip"}),
    ],
)
def test_field_metadata_lists_system_and_custom_fields(
    client: httpx.Client, kind: str, system: set[str], custom: set[str]
) -> None:
    body = client.get(f"/api/v2/{kind}.json").json()
    fields = {f["key"]: f for f in body[kind]}
    assert body["count"] == len(fields)
    assert system <= {k for k, f in fields.items() if f["system"]}
    assert custom == {k for k, f in fields.items() if not f["system"]}
    if kind == "organization_fields":
        tiers = [o["value"] for o in fields["account_tier"]["custom_field_options"]]
        assert tiers == ["basic", "premium", "enterprise"]


# --------------------------------------------------------------------------- ticket history


def _new_ticket_with_comments(client: httpx.Client, count: int) -> int:
    body = {"ticket": {"subject": "history", "comment": {"body": "first"}}}
    ticket_id = int(client.post("/api/v2/tickets.json", json=body).json()["ticket"]["id"])
    for n in range(count - 1):
        comment = {"body": f"note {n}", "public": False}
        client.put(f"/api/v2/tickets/{ticket_id}.json", json={"ticket": {"comment": comment}})
    return ticket_id


def test_comments_newest_first_over_every_page(client: httpx.Client) -> None:
    ticket_id = _new_ticket_with_comments(client, 5)
    path = f"/api/v2/tickets/{ticket_id}/comments.json"
    oldest_first = [c["body"] for c in client.get(path).json()["comments"]]
    assert oldest_first == ["first", "note 0", "note 1", "note 2", "note 3"]

    offset = client.get(path, params={"sort_order": "desc", "per_page": 2}).json()
    seen = [c["body"] for c in offset["comments"]]
    while offset["next_page"]:
        offset = client.get(offset["next_page"]).json()
        seen += [c["body"] for c in offset["comments"]]
    assert seen == oldest_first[::-1]

    cursor = client.get(path, params={"sort": "-created_at", "page[size]": 2}).json()
    pages = [[c["body"] for c in cursor["comments"]]]
    while cursor["meta"]["has_more"]:
        cursor = client.get(cursor["links"]["next"]).json()
        pages.append([c["body"] for c in cursor["comments"]])
    assert pages == [["note 3", "note 2"], ["note 1", "note 0"], ["first"]]
    back = client.get(cursor["links"]["prev"]).json()
    assert [c["body"] for c in back["comments"]] == ["note 1", "note 0"]


def test_audits_list_each_comment_with_its_ticket(client: httpx.Client) -> None:
    ticket_id = _new_ticket_with_comments(client, 3)
    body = client.get(
        f"/api/v2/tickets/{ticket_id}/audits.json", params={"sort_order": "desc"}
    ).json()
    assert body["count"] == 3
    assert {a["ticket_id"] for a in body["audits"]} == {ticket_id}
    comments = [e for a in body["audits"] for e in a["events"] if e["type"] == "Comment"]
    assert [(c["body"], c["public"]) for c in comments] == [
        ("note 1", False), ("note 0", False), ("first", True),
    ]  # fmt: skip
    seeded = client.get("/api/v2/tickets/2/audits.json").json()["audits"]
    assert [e["type"] for a in seeded for e in a["events"]] == ["Comment", "Comment"]
    assert client.get("/api/v2/tickets/999999/audits.json").status_code == 404


# --------------------------------------------------------------------------- older files


def _make_it_an_older_file(path: Path) -> None:
    """What a file seeded before organizations looked like: no organizations, no users'
    phone, organization or custom fields, and no audits for the seeded comments."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE organizations")
        for column in ("phone", "organization_id", "user_fields"):
            conn.execute(f"ALTER TABLE users DROP COLUMN {column}")
        conn.execute("DELETE FROM audits WHERE ticket_id = 2")
        conn.execute("DELETE FROM sandbox_meta WHERE key = 'directory_seeded'")
    conn.close()


def test_an_older_file_gains_organizations_once(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path):
        pass
    _make_it_an_older_file(tmp_path / "sandboxes" / "zendesk.sqlite3")

    for _ in range(2):  # upgraded on the first start, left alone on the second
        with serve_sandbox(tmp_path) as upgraded, upgraded.client() as c:
            assert c.get("/api/v2/organizations.json").json()["count"] == 3
            dave = c.get(f"/api/v2/users/{DAVE}.json").json()["user"]
            assert (dave["organization_id"], dave["phone"]) == (GLOBEX, "+1 555 0101")
            audits = c.get("/api/v2/tickets/2/audits.json").json()["audits"]
            assert [e["type"] for a in audits for e in a["events"]] == ["Comment", "Comment"]
            assert dave["user_fields"] == {"customer_since": None, "vip": None}
