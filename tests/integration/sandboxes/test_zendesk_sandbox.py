"""The Zendesk sandbox over real HTTP: what a Zendesk integration would notice."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from uwf.sandboxes import (
    UnknownSandboxError,
    create_sandbox_app,
    sandbox_accounts,
    sandbox_credentials,
)

from .conftest import PREFIX, RunningSandbox, serve_sandbox

ALICE, BOB, CAROL, DAVE = 10002, 10003, 10004, 20001


def put(client: httpx.Client, ticket_id: int, **fields: Any) -> httpx.Response:
    return client.put(f"/api/v2/tickets/{ticket_id}.json", json={"ticket": fields})


# --------------------------------------------------------------------------- auth


def test_email_token_basic_auth_identifies_the_agent(sandbox: RunningSandbox) -> None:
    with sandbox.client("alice@acme.test") as alice:
        response = alice.get("/api/v2/users/me.json")
    assert response.status_code == 200
    assert response.json()["user"]["id"] == ALICE
    assert response.json()["user"]["role"] == "agent"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer whatever"},
        {"Authorization": "Basic !!!not-base64"},
    ],
)
def test_missing_or_foreign_auth_is_401(sandbox: RunningSandbox, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sandbox.url}/api/v2/tickets/1.json", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


@pytest.mark.parametrize(
    ("email", "token"),
    [
        ("admin@uwf-sandbox.test", "wrong-token"),
        ("dave@customer.test", None),  # end users cannot use the API token
        ("nobody@acme.test", None),
    ],
)
def test_wrong_token_or_non_agent_is_401(
    sandbox: RunningSandbox, email: str, token: str | None
) -> None:
    with sandbox.client(email, token) as c:
        response = c.get("/api/v2/tickets/1")
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


# --------------------------------------------------------------------------- tickets


def test_seeded_ticket_123(client: httpx.Client, sandbox: RunningSandbox) -> None:
    ticket = client.get("/api/v2/tickets/123.json").json()["ticket"]
    assert (ticket["priority"], ticket["status"], ticket["assignee_id"]) == ("normal", "open", None)
    assert ticket["url"] == f"{sandbox.url}/api/v2/tickets/123.json"
    assert ticket["created_at"].endswith("Z")
    comments = client.get("/api/v2/tickets/123/comments").json()
    assert comments["count"] == 1
    assert comments["comments"][0]["public"] is True
    assert comments["comments"][0]["body"] == ticket["description"]


def test_update_is_read_back_and_audited(client: httpx.Client) -> None:
    response = put(
        client,
        7,
        priority="urgent",
        status="pending",
        assignee_id=CAROL,
        group_id=3003,
        tags=["VIP", "needs review"],
        custom_fields=[{"id": 360002, "value": "apac"}],
    )
    assert response.status_code == 200
    changed = {e["field_name"]: e for e in response.json()["audit"]["events"]}
    assert changed["priority"]["value"] == "urgent"
    ticket = client.get("/api/v2/tickets/7").json()["ticket"]
    assert ticket["priority"] == "urgent"
    assert ticket["status"] == "pending"
    assert ticket["assignee_id"] == CAROL
    assert ticket["group_id"] == 3003
    assert ticket["tags"] == ["vip", "needs", "review"]
    assert {"id": 360002, "value": "apac"} in ticket["custom_fields"]
    assert put(client, 7, priority=None).json()["ticket"]["priority"] is None


def test_comment_with_metadata_is_appended_in_order(client: httpx.Client) -> None:
    before = client.get("/api/v2/tickets/8/comments.json").json()["comments"]
    marker = {"uwf_correlation": "run-42"}
    body = {"ticket": {"comment": {"body": "Internal note", "public": False}, "metadata": marker}}
    response = client.put("/api/v2/tickets/8", json=body)
    assert response.status_code == 200
    assert response.json()["audit"]["metadata"]["custom"] == marker
    comments = client.get("/api/v2/tickets/8/comments").json()["comments"]
    assert len(comments) == len(before) + 1
    assert [c["id"] for c in comments] == sorted(c["id"] for c in comments)
    note = comments[-1]
    assert (note["type"], note["body"], note["public"]) == ("Comment", "Internal note", False)
    assert note["plain_body"] == "Internal note"
    assert "Internal note" in note["html_body"]
    assert note["metadata"]["custom"] == marker
    assert note["author_id"] == 10001


@pytest.mark.parametrize(
    ("fields", "field", "description"),
    [
        ({"priority": "asap"}, "priority", "Priority is invalid"),
        ({"status": "done"}, "status", "Status is invalid"),
        ({"assignee_id": DAVE}, "assignee_id", "Assignee is invalid"),  # an end user
        ({"assignee_id": 999999}, "assignee_id", "Assignee is invalid"),
        ({"type": "bug"}, "type", "Type is invalid"),
    ],
)
def test_invalid_values_are_422_record_invalid(
    client: httpx.Client, fields: dict[str, Any], field: str, description: str
) -> None:
    response = put(client, 9, **fields)
    assert response.status_code == 422
    assert response.json() == {
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {field: [{"description": description, "error": "InvalidValue"}]},
    }
    assert client.get("/api/v2/tickets/9").json()["ticket"]["status"] != "done"


def test_closed_ticket_cannot_be_updated(client: httpx.Client) -> None:
    response = put(client, 25, priority="low")  # every 25th seeded ticket is closed
    assert response.status_code == 422
    assert response.json()["details"]["status"][0]["error"] == "ClosedPreventsUpdate"


@pytest.mark.parametrize(
    "path",
    ["/api/v2/tickets/999999.json", "/api/v2/users/424242", "/api/v2/tickets/99999/comments"],
)
def test_unknown_record_is_404_record_not_found(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "RecordNotFound", "description": "Not found"}


def test_unknown_endpoint_is_404_invalid_endpoint(client: httpx.Client) -> None:
    for response in (client.get("/api/v2/nothing.json"), client.delete("/api/v2/tickets/1")):
        assert response.status_code == 404
        assert response.json() == {"error": "InvalidEndpoint", "description": "Not found"}
        assert "x-rate-limit" in response.headers


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.put(
        "/api/v2/tickets/10", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidJSON"


def test_ticket_fields_list_allowed_values(client: httpx.Client) -> None:
    fields = {
        f["type"]: f for f in client.get("/api/v2/ticket_fields.json").json()["ticket_fields"]
    }
    priorities = [o["value"] for o in fields["priority"]["system_field_options"]]
    assert priorities == ["urgent", "high", "normal", "low"]
    assert [o["value"] for o in fields["tagger"]["custom_field_options"]] == [
        "emea",
        "amer",
        "apac",
    ]


# --------------------------------------------------------------------------- pagination


def test_offset_pagination_visits_every_ticket_once(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    url: str | None = "/api/v2/tickets.json?per_page=40"
    ids: list[int] = []
    while url:
        page = client.get(url).json()
        ids += [t["id"] for t in page["tickets"]]
        url = page["next_page"]
        assert url is None or url.startswith(f"{sandbox.url}/api/v2/tickets.json")
    assert ids[:150] == list(range(1, 151))
    assert len(ids) == len(set(ids)) == page["count"]


def test_cursor_pagination_follows_links_both_ways(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    url: str | None = "/api/v2/tickets?page[size]=35"
    pages: list[dict[str, Any]] = []
    while url:
        pages.append(client.get(url).json())
        url = pages[-1]["links"]["next"]
        assert url is None or url.startswith(f"{sandbox.url}/api/v2/tickets?")
    ids = [t["id"] for p in pages for t in p["tickets"]]
    assert ids[:150] == list(range(1, 151))
    assert len(ids) == len(set(ids))
    assert pages[0]["meta"]["has_more"]
    assert not pages[-1]["meta"]["has_more"]
    back = client.get(pages[1]["links"]["prev"]).json()
    assert [t["id"] for t in back["tickets"]] == list(range(1, 36))


def test_cursor_page_size_over_100_is_rejected(client: httpx.Client) -> None:
    response = client.get("/api/v2/tickets.json", params={"page[size]": 101})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "InvalidPaginationParameter"


# --------------------------------------------------------------------------- users


@pytest.mark.parametrize(
    "params",
    [
        {"query": "email:bob@acme.test"},
        {"query": "bob@acme.test"},
        {"query": "BOB@acme.test"},
    ],
)
def test_user_search_by_email(client: httpx.Client, params: dict[str, str]) -> None:
    users = client.get("/api/v2/users/search.json", params=params).json()["users"]
    assert [u["id"] for u in users] == [BOB]


def test_user_search_by_external_id(client: httpx.Client) -> None:
    users = client.get("/api/v2/users/search", params={"external_id": "crm-0001"}).json()
    assert [u["email"] for u in users["users"]] == ["dave@customer.test"]


# --------------------------------------------------------------------------- idempotency


def test_idempotent_create_miss_hit_and_mismatch(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    body = {"ticket": {"subject": "Printer on fire", "comment": {"body": "Smoke!"}}}
    headers = {"Idempotency-Key": "key-1"}
    first = client.post("/api/v2/tickets.json", json=body, headers=headers)
    assert first.status_code == 201
    assert first.headers["x-idempotency-lookup"] == "miss"
    ticket = first.json()["ticket"]
    assert ticket["status"] == "new"
    assert ticket["description"] == "Smoke!"
    assert first.headers["location"] == ticket["url"]

    again = client.post("/api/v2/tickets", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["x-idempotency-lookup"] == "hit"
    assert again.json()["ticket"]["id"] == ticket["id"]

    other = {"ticket": {"subject": "Another", "comment": {"body": "x"}}}
    mismatch = client.post("/api/v2/tickets", json=other, headers=headers)
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "IdempotentRequestError"

    # Two hours later the key is forgotten and the same request creates a new ticket.
    with sqlite3.connect(sandbox.home / "sandboxes" / "zendesk.sqlite3") as db:
        db.execute("UPDATE sandbox_idempotency SET created_at = created_at - 7201")
    db.close()
    later = client.post("/api/v2/tickets", json=body, headers=headers)
    assert later.headers["x-idempotency-lookup"] == "miss"
    assert later.json()["ticket"]["id"] != ticket["id"]


def test_create_without_comment_is_422(client: httpx.Client) -> None:
    response = client.post("/api/v2/tickets", json={"ticket": {"subject": "No body"}})
    assert response.status_code == 422
    assert response.json()["details"]["description"][0]["error"] == "BlankValue"


# --------------------------------------------------------------------------- limits


def test_account_rate_limit(client: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.control(rate_limit_per_minute=3)
    remaining = []
    for _ in range(3):
        response = client.get("/api/v2/tickets/1")
        assert response.status_code == 200
        assert response.headers["X-Rate-Limit"] == "3"
        remaining.append(int(response.headers["X-Rate-Limit-Remaining"]))
    assert remaining == [2, 1, 0]
    limited = client.get("/api/v2/tickets/1")
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("text/plain")
    assert limited.text == "Too Many Requests"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"


def test_ticket_update_limit_is_per_user_per_ticket(sandbox: RunningSandbox) -> None:
    sandbox.control(ticket_update_limit=2)
    with sandbox.client() as admin, sandbox.client("alice@acme.test") as alice:
        assert [put(admin, 40, subject=f"s{n}").status_code for n in range(2)] == [200, 200]
        limited = put(admin, 40, subject="third")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) > 0
        assert put(alice, 40, subject="alice").status_code == 200  # another user
        assert put(admin, 41, subject="other").status_code == 200  # another ticket
        sandbox.control(ticket_update_limit=None)
        assert put(admin, 40, subject="unlimited").status_code == 200


# --------------------------------------------------------------------------- faults


def test_latency_is_added_without_blocking_the_server(sandbox: RunningSandbox) -> None:
    sandbox.control(latency_ms=300)
    auth = httpx.BasicAuth(
        f"{sandbox.credentials['email']}/token", sandbox.credentials["api_token"]
    )

    async def five_at_once() -> float:
        async with httpx.AsyncClient(base_url=sandbox.url, auth=auth) as c:
            start = time.monotonic()
            responses = await asyncio.gather(*(c.get(f"/api/v2/tickets/{n}") for n in range(1, 6)))
            assert all(r.status_code == 200 for r in responses)
            return time.monotonic() - start

    elapsed = asyncio.run(five_at_once())
    assert 0.3 <= elapsed < 1.2  # in parallel: one delay, not five


def test_injected_503_happens_before_the_write(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.control(error_rates={"503": 1.0})
    response = put(client, 50 + 1, priority="low")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "maintenance" in response.text
    sandbox.reset()
    assert client.get("/api/v2/tickets/51").json()["ticket"]["priority"] != "low"


def test_drop_after_write_commits_then_cuts_the_connection(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        put(client, 60, priority="high", comment={"body": "lost reply"})
    assert client.get("/api/v2/tickets/60").json()["ticket"]["priority"] == "high"
    assert sandbox.stats()["dropped_after_write"] == 1


def test_retry_after_dropped_create_replays_the_same_ticket(
    client: httpx.Client, sandbox: RunningSandbox
) -> None:
    body = {"ticket": {"subject": "Retry me", "comment": {"body": "once"}}}
    headers = {"Idempotency-Key": "drop-1"}
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post("/api/v2/tickets", json=body, headers=headers)
    retry = client.post("/api/v2/tickets", json=body, headers=headers)
    assert retry.headers["x-idempotency-lookup"] == "hit"
    found = client.get("/api/v2/tickets", params={"per_page": 100, "page": 2}).json()["tickets"]
    assert [t["id"] for t in found if t["subject"] == "Retry me"] == [retry.json()["ticket"]["id"]]


def test_control_rejects_unknown_keys_and_reports_stats(sandbox: RunningSandbox) -> None:
    bad = httpx.post(f"{sandbox.url}/_control", json={"latency": 5})
    assert bad.status_code == 400
    assert bad.json()["key"] == "latency"
    assert "latency" in bad.json()["error"]
    bad_rate = httpx.post(f"{sandbox.url}/_control", json={"error_rates": {"503": 2}})
    assert bad_rate.status_code == 400
    assert bad_rate.json()["key"] == "error_rates.503"
    sandbox.control(error_rates={"429": 0.5}, seed=7)
    with sandbox.client() as c:
        statuses = [c.get("/api/v2/tickets/2").status_code for _ in range(10)]
    stats = sandbox.stats()
    assert stats["requests_total"] == 10
    assert stats["injected"].get("429", 0) == statuses.count(429) > 0
    assert stats["by_status"]["200"] == statuses.count(200)
    assert stats["max_requests_1s"] >= 1
    assert stats["max_requests_60s"] == 10


# --------------------------------------------------------------------------- lifecycle


def test_records_and_credentials_survive_a_restart(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path) as first, first.client() as c:
        credentials = first.credentials
        assert put(c, 77, priority="urgent").status_code == 200
    with serve_sandbox(tmp_path) as second, second.client() as c:
        assert second.credentials == credentials
        assert c.get("/api/v2/tickets/77").json()["ticket"]["priority"] == "urgent"
        assert c.get("/api/v2/tickets").json()["count"] == 150  # not seeded twice
    assert sandbox_credentials(tmp_path, "zendesk") == credentials


def test_sandbox_accounts_and_registry(tmp_path: Path) -> None:
    accounts = sandbox_accounts(tmp_path, "http://127.0.0.1:8080/")
    zendesk = accounts["zendesk"]
    assert zendesk["base_url"] == f"http://127.0.0.1:8080{PREFIX}"
    assert zendesk["subdomain"] == "uwf-sandbox"
    assert zendesk["email"] == "admin@uwf-sandbox.test"
    assert zendesk["api_token"] == sandbox_credentials(tmp_path, "zendesk")["api_token"]
    with pytest.raises(
        UnknownSandboxError, match=r"no sandbox for CRM 'pipedrive'; known: .*zendesk"
    ):
        create_sandbox_app("pipedrive", tmp_path)


async def test_served_at_the_root_urls_have_no_prefix(tmp_path: Path) -> None:
    app = create_sandbox_app("zendesk", tmp_path)
    try:
        creds = app.credentials
        auth = httpx.BasicAuth(f"{creds['email']}/token", creds["api_token"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://zd.test", auth=auth
        ) as c:
            page = (await c.get("/api/v2/tickets.json?per_page=100")).json()
    finally:
        app.close()
    assert page["tickets"][0]["url"] == "http://zd.test/api/v2/tickets/1.json"
    assert page["next_page"].startswith("http://zd.test/api/v2/tickets.json?")
