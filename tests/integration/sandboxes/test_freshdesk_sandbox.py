"""The Freshdesk sandbox over real HTTP: what a Freshdesk integration would notice."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from freshdesk.api import API
from freshdesk.v2.errors import FreshdeskBadRequest, FreshdeskNotFound, FreshdeskUnauthorized

from uwf.sandboxes import create_sandbox_app, sandbox_accounts, sandbox_credentials

from .conftest import RunningSandbox, serve_sandbox

ADMIN, ALICE, BOB = 43000000001, 43000000002, 43000000003
DAVE = 43000000101
PREFIX = "/sandbox/freshdesk"
NOT_LOGGED_IN = {
    "code": "invalid_credentials",
    "message": "You have to be logged in to perform this action.",
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Overrides the package's Zendesk default: one Freshdesk server per module."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "freshdesk") as running:
        yield running


def fd_client(sandbox: RunningSandbox, key: str | None = None) -> httpx.Client:
    """A client that authenticates as Freshdesk integrations do: Basic ``api_key:X``."""
    auth = httpx.BasicAuth(key or sandbox.credentials["api_key"], "X")
    return httpx.Client(base_url=f"{sandbox.url}/api/v2", auth=auth, timeout=10)


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with fd_client(sandbox) as c:
        yield c


def validation(*errors: tuple[str, str, str]) -> dict[str, Any]:
    """Freshdesk's 400 body for the given (field, message, code) triples."""
    listed = [{"field": f, "message": m, "code": c} for f, m, c in errors]
    return {"description": "Validation failed", "errors": listed}


# --------------------------------------------------------------------------- auth


def test_api_key_and_email_password_both_identify_the_agent(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    with fd_client(sandbox) as by_key:
        me = by_key.get("/agents/me")
    by_password = httpx.get(
        f"{sandbox.url}/api/v2/agents/me", auth=(creds["email"], creds["password"])
    )
    assert me.status_code == by_password.status_code == 200
    assert me.json()["id"] == by_password.json()["id"] == ADMIN
    assert me.json()["contact"]["email"] == creds["email"]
    assert me.headers["x-freshdesk-api-version"] == "latest=api-v2; requested=api-v2"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer " + "a" * 20},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic d3Jvbmcta2V5Olg="},  # wrong-key:X
    ],
    ids=["none", "bearer", "garbage", "wrong-key"],
)
def test_bad_credentials_are_401_invalid_credentials(
    sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{sandbox.url}/api/v2/tickets/1123", headers=headers)
    assert response.status_code == 401
    assert response.json() == NOT_LOGGED_IN
    assert response.headers["X-RateLimit-Remaining"].isdigit()  # 401s count against the limit


def test_a_customer_login_is_403_access_denied(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    auth = (creds["contact_email"], creds["contact_password"])
    response = httpx.get(f"{sandbox.url}/api/v2/tickets/1123", auth=auth)
    assert response.status_code == 403
    message = "You are not authorized to perform this action."
    assert response.json() == {"code": "access_denied", "message": message}


def test_there_is_no_oauth_token_endpoint(client: httpx.Client, sandbox: RunningSandbox) -> None:
    # Freshdesk API v2 authenticates with API keys only; nothing answers an OAuth grant.
    response = httpx.post(f"{sandbox.url}/oauth/token", data={"grant_type": "password"})
    assert response.status_code == 404
    assert response.content == b""


# --------------------------------------------------------------------------- tickets


def test_quickstart_ticket_is_open_medium_unassigned_and_has_no_notes(
    client: httpx.Client,
) -> None:
    ticket = client.get("/tickets/1123").json()
    assert (ticket["status"], ticket["priority"], ticket["responder_id"]) == (2, 2, None)
    assert ticket["description"].startswith("<div>")
    assert (
        ticket["description_text"]
        == "Hi, feature request: dark mode. Details for seed ticket 1123."
    )
    assert set(ticket["custom_fields"]) == {"cf_order_number", "cf_region", "cf_uwf_step_key"}
    assert ticket["created_at"].endswith("Z")
    assert client.get("/tickets/1123/conversations").json() == []


def test_update_is_read_back(client: httpx.Client) -> None:
    before = client.get("/tickets/1107").json()
    changes = {
        "priority": 4,
        "status": 3,
        "responder_id": BOB,
        "group_id": 43000000203,
        "type": "Incident",
        "tags": ["vip", "needs-review"],
        "custom_fields": {"cf_region": "APAC"},
    }
    response = client.put("/tickets/1107", json=changes)
    assert response.status_code == 200
    ticket = client.get("/tickets/1107").json()
    assert {k: ticket[k] for k in changes if k != "custom_fields"} == {
        k: v for k, v in changes.items() if k != "custom_fields"
    }
    assert ticket["custom_fields"]["cf_region"] == "APAC"
    # Custom fields merge: the order number set at seed time survives.
    assert ticket["custom_fields"]["cf_order_number"] == before["custom_fields"]["cf_order_number"]
    assert ticket["updated_at"] > before["updated_at"]
    assert client.put("/tickets/1107", json={"responder_id": None}).json()["responder_id"] is None


def test_create_with_a_new_requester_email(client: httpx.Client, sandbox: RunningSandbox) -> None:
    body = {
        "subject": "Printer on fire",
        "description": "Smoke <b>everywhere</b>",
        "email": "zed@customer.test",
        "name": "Zed",
        "priority": 3,
    }
    response = client.post("/tickets", json=body)
    assert response.status_code == 201
    ticket = response.json()
    assert response.headers["location"] == f"{sandbox.url}/api/v2/tickets/{ticket['id']}"
    assert ticket["id"] > 1160  # after the seeded ones
    assert (ticket["status"], ticket["priority"], ticket["source"]) == (2, 3, 2)
    assert ticket["description_text"] == "Smoke everywhere"
    requester = client.get(f"/contacts/{ticket['requester_id']}").json()
    assert (requester["name"], requester["email"]) == ("Zed", "zed@customer.test")
    assert client.get(f"/tickets/{ticket['id']}").json()["subject"] == "Printer on fire"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"priority": 9},
            ("priority", "It should be one of these values: '1,2,3,4'", "invalid_value"),
        ),
        (
            {"status": "open"},
            ("status", "It should be one of these values: '2,3,4,5'", "invalid_value"),
        ),
        (
            {"responder_id": 999},
            ("responder_id", "There is no agent matching the given responder_id", "invalid_value"),
        ),
        (
            {"responder_id": "bob"},
            (
                "responder_id",
                "Value set is of type String.It should be a/an Positive Integer",
                "datatype_mismatch",
            ),
        ),
        (
            {"assignee_id": BOB},
            ("assignee_id", "Unexpected/invalid field in request", "invalid_field"),
        ),
        (
            {"custom_fields": {"cf_nope": 1}},
            ("cf_nope", "Unexpected/invalid field in request", "invalid_field"),
        ),
        (
            {"custom_fields": {"cf_region": "Mars"}},
            ("cf_region", "It should be one of these values: 'EMEA,AMER,APAC'", "invalid_value"),
        ),
        (
            {"tags": ["x" * 33]},
            (
                "tags",
                "It should only contain elements that have maximum of 32 characters",
                "invalid_value",
            ),
        ),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_invalid_update_is_400_validation_failed(
    client: httpx.Client, body: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    response = client.put("/tickets/1109", json=body)
    assert response.status_code == 400
    assert response.json() == validation(expected)
    assert client.get("/tickets/1109").json()["priority"] != 9


def test_create_lists_every_missing_field(client: httpx.Client) -> None:
    response = client.post("/tickets", json={"priority": 1})
    requester = (
        "Please fill at least 1 of requester_id, phone, email, twitter_id, facebook_id, "
        "unique_external_id fields"
    )
    assert response.status_code == 400
    assert response.json() == validation(
        ("requester_id", requester, "missing_field"),
        ("subject", "It should be a/an String", "missing_field"),
        ("description", "It should be a/an String", "missing_field"),
    )


def test_request_errors(client: httpx.Client) -> None:
    empty = client.put("/tickets/1110", json={})
    assert empty.status_code == 400
    assert empty.json()["code"] == "missing_params"
    broken = client.put(
        "/tickets/1110", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json() == {
        "code": "invalid_json",
        "message": "Request body has invalid json format",
    }
    form = client.put("/tickets/1110", data={"priority": "1"})
    assert form.status_code == 415
    assert form.json()["code"] == "invalid_content_type"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tickets/999999"),
        ("PUT", "/tickets/999999"),
        ("GET", "/tickets/999999/conversations"),
        ("POST", "/tickets/999999/notes"),
        ("GET", "/agents/424242"),
        ("GET", "/contacts/424242"),
        ("GET", "/nothing/here"),
    ],
)
def test_not_found_is_404_with_an_empty_body(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json={"body": "x"} if method != "GET" else None)
    assert response.status_code == 404
    assert response.content == b""


def test_wrong_verb_is_405_with_allow(client: httpx.Client) -> None:
    response = client.delete("/tickets/1123")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT"
    expected = "DELETE method is not allowed. It should be one of these method(s): GET, PUT"
    assert response.json() == {"message": expected}


# --------------------------------------------------------------------------- notes


def test_private_note_is_appended_to_the_conversations(client: httpx.Client) -> None:
    before = client.get("/tickets/1112/conversations").json()
    response = client.post("/tickets/1112/notes", json={"body": "Escalated: churn & risk"})
    assert response.status_code == 201
    note = response.json()
    assert note["private"] is True  # Freshdesk's default for notes
    assert note["body"] == "<div>Escalated: churn &amp; risk</div>"
    assert note["body_text"] == "Escalated: churn & risk"
    assert (note["ticket_id"], note["user_id"], note["source"]) == (1112, ADMIN, 2)
    public = client.post("/tickets/1112/notes", json={"body": "FYI", "private": False}).json()
    listed = client.get("/tickets/1112/conversations").json()
    assert [c["id"] for c in listed] == [*(c["id"] for c in before), note["id"], public["id"]]
    assert [c["private"] for c in listed[-2:]] == [True, False]


def test_invalid_note_is_400(client: httpx.Client) -> None:
    response = client.post("/tickets/1112/notes", json={"private": "yes", "html": "x"})
    assert response.status_code == 400
    assert response.json() == validation(
        ("html", "Unexpected/invalid field in request", "invalid_field"),
        ("body", "It should be a/an String", "missing_field"),
        ("private", "Value set is of type String.It should be a/an Boolean", "datatype_mismatch"),
    )


# --------------------------------------------------------------------------- people and fields


@pytest.mark.parametrize("email", ["bob@acme.test", "BOB@acme.test"])
def test_agent_lookup_by_email(client: httpx.Client, email: str) -> None:
    agents = client.get("/agents", params={"email": email}).json()
    assert [(a["id"], a["contact"]["email"]) for a in agents] == [(BOB, "bob@acme.test")]
    assert client.get("/agents", params={"email": "nobody@acme.test"}).json() == []
    assert client.get(f"/agents/{ALICE}").json()["contact"]["name"] == "Alice Agent"


def test_contacts_are_the_requesters(client: httpx.Client) -> None:
    [dave] = client.get("/contacts", params={"email": "dave@customer.test"}).json()
    assert dave["id"] == DAVE
    tickets = client.get("/tickets", params={"requester_id": DAVE, "updated_since": "2020-01-01"})
    assert tickets.json()
    assert {t["requester_id"] for t in tickets.json()} == {DAVE}


def test_ticket_fields_list_choices(client: httpx.Client) -> None:
    fields = {f["name"]: f for f in client.get("/ticket_fields").json()}
    assert fields["priority"]["choices"] == {"Low": 1, "Medium": 2, "High": 3, "Urgent": 4}
    assert fields["status"]["choices"]["2"] == ["Open", "Being Processed"]
    assert fields["status"]["type"] == "default_status"
    assert fields["cf_region"]["choices"] == ["EMEA", "AMER", "APAC"]
    assert fields["cf_uwf_step_key"]["type"] == "custom_text"
    only = client.get("/ticket_fields", params={"type": "default_priority"}).json()
    assert [f["name"] for f in only] == ["priority"]


# --------------------------------------------------------------------------- pagination


def test_ticket_list_follows_link_to_the_end(client: httpx.Client, sandbox: RunningSandbox) -> None:
    url: str | None = "/tickets?updated_since=2000-01-01T00:00:00Z&per_page=25&order_type=asc"
    ids: list[int] = []
    pages = 0
    while url:
        response = client.get(url)
        pages += 1
        ids += [t["id"] for t in response.json()]
        link = response.headers.get("link")
        assert link is None or link.startswith(f"<{sandbox.url}/api/v2/tickets?")
        url = link[1 : link.index(">")] if link else None
    assert pages >= 3
    assert ids[:60] == list(range(1101, 1161))
    assert len(ids) == len(set(ids))
    assert all("description" not in t for t in response.json())  # lists omit it


def test_ticket_list_defaults_to_the_last_30_days(client: httpx.Client) -> None:
    created = client.post(
        "/tickets", json={"subject": "Fresh", "description": "new", "requester_id": DAVE}
    ).json()
    recent = [t["id"] for t in client.get("/tickets", params={"per_page": 100}).json()]
    assert created["id"] in recent
    assert not any(1101 <= i <= 1160 for i in recent)  # seeded in 2024
    mine = client.get("/tickets", params={"filter": "new_and_my_open"}).json()
    assert created["id"] in [t["id"] for t in mine]


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"per_page": 101}, "per_page", "datatype_mismatch"),
        ({"page": 0}, "page", "datatype_mismatch"),
        ({"sort": "id"}, "sort", "invalid_field"),
    ],
)
def test_bad_list_parameters_are_400(
    client: httpx.Client, params: dict[str, Any], field: str, code: str
) -> None:
    response = client.get("/tickets", params=params)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == (field, code)


def test_conversations_paginate(client: httpx.Client) -> None:
    for n in range(3):
        client.post("/tickets/1113/notes", json={"body": f"n{n}"}).raise_for_status()
    first = client.get("/tickets/1113/conversations", params={"per_page": 2})
    assert len(first.json()) == 2
    assert 'rel="next"' in first.headers["link"]
    link = first.headers["link"]
    rest = client.get(link[1 : link.index(">")])
    assert rest.json()[0]["id"] > first.json()[-1]["id"]


# --------------------------------------------------------------------------- search


def search(client: httpx.Client, query: str, page: int | None = None) -> httpx.Response:
    params: dict[str, Any] = {"query": f'"{query}"'}
    if page is not None:
        params["page"] = page
    return client.get("/search/tickets", params=params)


def test_filter_query_combines_fields(client: httpx.Client) -> None:
    found = search(client, "priority:4 AND (status:2 OR status:3) AND tag:'billing'").json()
    assert found["total"] == len(found["results"]) > 0
    for ticket in found["results"]:
        assert ticket["priority"] == 4
        assert ticket["status"] in (2, 3)
        assert "billing" in ticket["tags"]
    created = [t["created_at"] for t in found["results"]]
    assert created == sorted(created, reverse=True)  # newest first


def test_filter_by_custom_field_and_null(client: httpx.Client) -> None:
    client.put("/tickets/1114", json={"custom_fields": {"cf_uwf_step_key": "run-1:note"}})
    found = search(client, "cf_uwf_step_key:'run-1:note'").json()
    assert [t["id"] for t in found["results"]] == [1114]
    unassigned = search(client, "agent_id:null AND created_at:<'2024-01-04'").json()
    assert unassigned["total"] > 0
    assert all(t["responder_id"] is None for t in unassigned["results"])


def test_filter_pages_hold_thirty_and_stop_at_ten(client: httpx.Client) -> None:
    everything = search(client, "created_at:>'2000-01-01'").json()
    assert len(everything["results"]) == 30 < everything["total"]
    second = search(client, "created_at:>'2000-01-01'", page=2).json()
    assert not {t["id"] for t in second["results"]} & {t["id"] for t in everything["results"]}
    too_far = search(client, "status:2", page=11)
    assert too_far.status_code == 400
    assert too_far.json()["errors"][0]["field"] == "page"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("priority:4", "query"),  # not wrapped in double quotes
        ('"priority:4 AND"', "query"),
        ('"priority:4 and status:2"', "query"),
        ("\"subject:'x'\"", "subject"),  # not a searchable field
        ("\"priority:'high'\"", "priority"),
    ],
)
def test_invalid_filter_query_is_400(client: httpx.Client, query: str, field: str) -> None:
    response = client.get("/search/tickets", params={"query": query})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


# --------------------------------------------------------------------------- limits


def test_account_rate_limit_headers_and_429(client: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.control(rate_limit_per_minute=3)
    remaining = []
    for _ in range(3):
        response = client.get("/tickets/1101")
        assert response.headers["X-RateLimit-Total"] == "3"
        assert response.headers["X-RateLimit-Used-CurrentRequest"] == "1"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    limited = client.get("/tickets/1101")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_ticket_write_and_list_sub_limits(client: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.control(ticket_write_limit=1, list_limit=1)
    assert client.put("/tickets/1115", json={"priority": 1}).status_code == 200
    second = client.put("/tickets/1115", json={"priority": 2})
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) > 0
    assert client.get("/tickets/1115").json()["priority"] == 1  # refused before writing
    assert client.get("/agents").status_code == 200
    assert client.get("/contacts").status_code == 429
    assert client.get("/tickets/1115").status_code == 200  # a single record is not a list


# --------------------------------------------------------------------------- faults


def test_injected_errors_come_before_the_write(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.control(error_rates={"503": 1.0})
    response = client.put("/tickets/1116", json={"priority": 4})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    sandbox.control(error_rates={"429": 1.0})
    throttled = client.get("/tickets/1116")
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "1")
    sandbox.reset()
    assert client.get("/tickets/1116").json()["priority"] != 4


def test_drop_after_write_commits_the_note_then_cuts_the_connection(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post("/tickets/1117/notes", json={"body": "lost reply"})
    sandbox.reset()
    notes = client.get("/tickets/1117/conversations").json()
    assert [n["body_text"] for n in notes].count("lost reply") == 1
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.put("/tickets/1117", json={"priority": 4})
    assert sandbox.stats()["dropped_after_write"] == 1
    sandbox.reset()
    assert client.get("/tickets/1117").json()["priority"] == 4


def test_control_rejects_unknown_keys(sandbox: RunningSandbox) -> None:
    bad = httpx.post(f"{sandbox.url}/_control", json={"token_ttl_seconds": 5})
    assert bad.status_code == 400
    assert bad.json()["key"] == "token_ttl_seconds"
    settings = httpx.get(f"{sandbox.url}/_control").json()["settings"]
    assert (settings["rate_limit_per_minute"], settings["ticket_write_limit"]) == (400, 160)
    assert settings["list_limit"] == 100


# --------------------------------------------------------------------------- lifecycle


def test_records_and_credentials_survive_a_restart(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "freshdesk") as first, fd_client(first) as c:
        creds = first.credentials
        assert c.put("/tickets/1120", json={"priority": 4}).status_code == 200
    with serve_sandbox(tmp_path, "freshdesk") as second, fd_client(second) as c:
        assert second.credentials == creds
        assert c.get("/tickets/1120").json()["priority"] == 4
        everything = c.get("/search/tickets", params={"query": "\"created_at:>'2000-01-01'\""})
        assert everything.json()["total"] == 60  # not seeded twice
    assert sandbox_credentials(tmp_path, "freshdesk") == creds
    with sqlite3.connect(tmp_path / "sandboxes" / "freshdesk.sqlite3") as db:
        row = db.execute("SELECT value FROM sandbox_meta WHERE key = 'credentials'").fetchone()
    db.close()
    assert json.loads(row[0])["api_key"] == creds["api_key"]  # kept in the SQLite file
    assert (
        sandbox_accounts(tmp_path, "http://h:1")["freshdesk"]["base_url"] == f"http://h:1{PREFIX}"
    )


async def test_served_at_the_root_urls_have_no_prefix(tmp_path: Path) -> None:
    app = create_sandbox_app("freshdesk", tmp_path)
    try:
        auth = httpx.BasicAuth(app.credentials["api_key"], "X")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://fd.test", auth=auth
        ) as c:
            page = await c.get("/api/v2/tickets", params={"updated_since": "2000-01-01"})
            created = await c.post(
                "/api/v2/tickets", json={"subject": "s", "description": "d", "requester_id": DAVE}
            )
    finally:
        app.close()
    assert page.headers["link"].startswith("<http://fd.test/api/v2/tickets?")
    assert created.headers["location"].startswith("http://fd.test/api/v2/tickets/")


# --------------------------------------------------------------------------- vendor client


def test_python_freshdesk_client_works_against_the_sandbox(sandbox: RunningSandbox) -> None:
    # python-freshdesk insists on a *.freshdesk.com domain and builds https://{domain}/api/v2/;
    # its only seam for another address is the `_api_prefix` it prepends to every path.
    api = API(sandbox.credentials["domain"], sandbox.credentials["api_key"])
    api._api_prefix = f"{sandbox.url}/api/v2/"

    ticket = api.tickets.get_ticket(1123)
    assert (ticket.subject, ticket.status, ticket.priority) == (
        "Feature request: dark mode #1123",
        "open",
        "medium",
    )
    created = api.tickets.create_ticket(
        "Library ticket", email="lib@customer.test", description="from python-freshdesk",
        priority=3, custom_fields={"cf_uwf_step_key": "lib:create"},
    )  # fmt: skip
    assert created.priority == "high"
    updated = api.tickets.update_ticket(created.id, priority=4, responder_id=ALICE)
    assert (updated.priority, updated.responder_id) == ("urgent", ALICE)
    api.comments.create_note(created.id, "Escalated: library", private=True)
    [note] = api.comments.list_comments(created.id)
    assert (note.body_text, note.private, note.source) == ("Escalated: library", True, "note")
    [bob] = api.agents.list_agents(email="bob@acme.test")
    assert bob.id == BOB
    assert api.agents.currently_authenticated_agent().id == ADMIN
    assert [t.id for t in api.tickets.filter_tickets("cf_uwf_step_key:'lib:create'")] == [
        created.id
    ]
    recent = [t.id for t in api.tickets.list_tickets(filter_name=None)]  # the last 30 days
    assert created.id in recent
    assert created.id not in [t.id for t in api.tickets.list_tickets()]  # Alice's, not "mine"
    assert "priority" in [f.name for f in api.ticket_fields.list_ticket_fields()]

    with pytest.raises(FreshdeskNotFound):
        api.tickets.get_ticket(999999)
    with pytest.raises(FreshdeskBadRequest, match="Validation failed"):
        api.tickets.update_ticket(created.id, priority=9)
    wrong = API(sandbox.credentials["domain"], "not-the-key")
    wrong._api_prefix = api._api_prefix
    with pytest.raises(FreshdeskUnauthorized, match="logged in"):
        wrong.tickets.get_ticket(1123)
