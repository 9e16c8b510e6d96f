"""The ServiceNow sandbox over real HTTP: what a ServiceNow integration would notice
(incidents, users, journals, tokens and limits; companies and contacts)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pysnow  # type: ignore[import-untyped]  # pysnow ships no type hints
import pytest

from uwf.sandboxes import sandbox_accounts, sandbox_credentials

from .conftest import RunningSandbox, serve_sandbox

INC = "/api/now/table/incident"
USERS = "/api/now/table/sys_user"
JOURNAL = "/api/now/table/sys_journal_field"
COMPANIES = "/api/now/table/core_company"
CONTACTS = "/api/now/table/customer_contact"
FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "crm-specs" / "servicenow" / "fixtures"
NOT_AUTHENTICATED = {
    "error": {
        "message": "User Not Authenticated",
        "detail": "Required to provide Auth information",
    },
    "status": "failure",
}
NO_RECORD = {
    "error": {
        "message": "No Record found",
        "detail": "Record doesn't exist or ACL restricts the record retrieval",
    },
    "status": "failure",
}
ACCESS_DENIED = {"error_description": "access_denied", "error": "server_error"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """One ServiceNow server per module (the shared conftest resets its `_control` per test)."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "servicenow") as running:
        yield running


@pytest.fixture
def snow(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    """A client that authenticates like a ServiceNow integration user (Basic)."""
    creds = sandbox.credentials
    with httpx.Client(
        base_url=sandbox.url, auth=(creds["username"], creds["password"]), timeout=10
    ) as client:
        yield client


def incident(client: httpx.Client, n: int, **params: str) -> dict[str, Any]:
    """Seeded incident INC00101nn by its number."""
    query = {"sysparm_query": f"number=INC{10000 + n:07d}", **params}
    [record] = client.get(INC, params=query).json()["result"]
    result: dict[str, Any] = record
    return result


def token(sandbox: RunningSandbox, **form: str) -> httpx.Response:
    creds = sandbox.credentials
    grant = {"client_id": creds["client_id"], "client_secret": creds["client_secret"], **form}
    if grant.get("grant_type") == "password":
        grant = {"username": creds["username"], "password": creds["password"], **grant}
    return httpx.post(f"{sandbox.url}/oauth_token.do", data=grant, timeout=10)


def bearer(sandbox: RunningSandbox, access_token: str, path: str = INC) -> httpx.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return httpx.get(f"{sandbox.url}{path}", params={"sysparm_limit": 1}, headers=headers)


def links(response: httpx.Response) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]+)>;rel="(\w+)"', response.headers["link"])}


def notes(client: httpx.Client, sys_id: str, element: str = "work_notes") -> list[str]:
    query = f"element_id={sys_id}^element={element}^ORDERBYDESCsys_created_on"
    found = client.get(JOURNAL, params={"sysparm_query": query}).json()["result"]
    return [entry["value"] for entry in found]


# --------------------------------------------------------------------------- auth


def test_quickstart_incident_over_basic_auth(snow: httpx.Client, sandbox: RunningSandbox) -> None:
    record = incident(snow, 123)
    assert record["number"] == "INC0010123"
    assert record["sys_id"] == "eb07cbd44e76ff9a765f93b1d8b44609"  # as docs/crms/servicenow.md says
    assert (record["state"], record["priority"], record["impact"], record["urgency"]) == (
        "1",
        "3",
        "2",
        "2",
    )
    assert record["assigned_to"] == ""
    assert record["opened_by"]["link"].startswith(f"{sandbox.url}/api/now/table/sys_user/")
    assert all(isinstance(v, str | dict) for v in record.values())
    assert notes(snow, record["sys_id"]) == []
    assert notes(snow, record["sys_id"], "comments") == [record["description"]]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic YWRtaW46d3Jvbmc="},  # admin:wrong
        {"Authorization": "Basic bm9ib2R5Om5vcGU="},  # nobody:nope
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic !!!"},
    ],
)
def test_bad_credentials_are_401_user_not_authenticated(
    sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{sandbox.url}{INC}", headers=headers)
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED
    assert response.headers["www-authenticate"].startswith("BASIC")
    assert "x-ratelimit-limit" not in response.headers  # no user, so no rule matched


def test_password_grant_and_bearer_calls(sandbox: RunningSandbox) -> None:
    response = token(sandbox, grant_type="password")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "scope", "token_type", "expires_in"}
    assert (body["scope"], body["token_type"], body["expires_in"]) == (
        "useraccount",
        "Bearer",
        1799,
    )
    assert bearer(sandbox, body["access_token"]).status_code == 200
    # "Access requests made within the expiration time of the access token always return the
    # current access token" — and the current refresh token.
    again = token(sandbox, grant_type="password").json()
    assert (again["access_token"], again["refresh_token"]) == (
        body["access_token"],
        body["refresh_token"],
    )


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "client_secret": "wrong"},
        {"grant_type": "password", "password": "wrong"},
        {"grant_type": "password", "client_id": "0" * 32},
        {"grant_type": "refresh_token", "refresh_token": "never-issued"},
    ],
    ids=["bad-client-secret", "bad-password", "unknown-client", "unknown-refresh-token"],
)
def test_refused_grants_are_401_access_denied(
    sandbox: RunningSandbox, form: dict[str, str]
) -> None:
    response = token(sandbox, **form)
    assert response.status_code == 401
    assert response.json() == ACCESS_DENIED


def test_token_endpoint_takes_form_encoding_only(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    body = {
        "grant_type": "password",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "username": creds["username"],
        "password": creds["password"],
    }
    as_json = httpx.post(f"{sandbox.url}/oauth_token.do", json=body)
    assert (as_json.status_code, as_json.json()) == (401, ACCESS_DENIED)
    unsupported = token(sandbox, grant_type="authorization_code", code="x")
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"


def test_refresh_grant_does_not_rotate_the_refresh_token(sandbox: RunningSandbox) -> None:
    first = token(sandbox, grant_type="password").json()
    refreshed = token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert body["refresh_token"] == first["refresh_token"]  # ServiceNow keeps refresh tokens
    assert body["access_token"] != first["access_token"]
    assert bearer(sandbox, body["access_token"]).status_code == 200
    assert bearer(sandbox, first["access_token"]).status_code == 200  # not revoked
    # The long-lived dev tokens of `credentials()` work the same way.
    dev = token(
        sandbox, grant_type="refresh_token", refresh_token=sandbox.credentials["refresh_token"]
    )
    assert dev.status_code == 200
    assert bearer(sandbox, sandbox.credentials["access_token"]).status_code == 200


def test_client_credentials_grant_has_no_refresh_token(sandbox: RunningSandbox) -> None:
    body = token(sandbox, grant_type="client_credentials").json()
    assert set(body) == {"access_token", "scope", "token_type", "expires_in"}
    assert bearer(sandbox, body["access_token"]).status_code == 200


def test_access_token_expires_after_token_ttl(sandbox: RunningSandbox) -> None:
    sandbox.control(token_ttl_seconds=1)
    first = token(
        sandbox, grant_type="refresh_token", refresh_token=sandbox.credentials["refresh_token"]
    ).json()
    assert first["expires_in"] == 1
    assert bearer(sandbox, first["access_token"]).status_code == 200
    time.sleep(1.1)
    expired = bearer(sandbox, first["access_token"])
    assert (expired.status_code, expired.json()) == (401, NOT_AUTHENTICATED)
    sandbox.control(token_ttl_seconds=1800)
    renewed = token(
        sandbox, grant_type="refresh_token", refresh_token=sandbox.credentials["refresh_token"]
    ).json()
    assert renewed["expires_in"] == 1799
    assert bearer(sandbox, renewed["access_token"]).status_code == 200


def test_token_requests_are_counted_by_grant_type(sandbox: RunningSandbox) -> None:
    refresh = token(sandbox, grant_type="password").json()["refresh_token"]
    token(sandbox, grant_type="password", password="wrong")
    token(sandbox, grant_type="refresh_token", refresh_token=refresh)
    stats = sandbox.stats()
    assert stats["token_requests"] == 3
    assert stats["token_requests_by_grant_type"] == {"password": 2, "refresh_token": 1}
    sandbox.reset()
    assert sandbox.stats()["token_requests"] == 0


# --------------------------------------------------------------------------- incidents


def test_update_is_read_back_and_priority_follows_impact_and_urgency(snow: httpx.Client) -> None:
    before = incident(snow, 130)
    url = f"{INC}/{before['sys_id']}"
    # A priority written directly is recomputed from impact x urgency, as the instance does.
    response = snow.patch(
        url,
        json={
            "impact": 1,
            "urgency": "2",
            "priority": "5",
            "short_description": "VPN down for the CFO",
        },
    )
    assert response.status_code == 200
    assert response.json()["result"]["priority"] == "2"
    after = snow.get(url).json()["result"]
    assert (after["impact"], after["urgency"], after["priority"]) == ("1", "2", "2")
    assert after["short_description"] == "VPN down for the CFO"
    assert after["sys_mod_count"] == str(int(before["sys_mod_count"]) + 1)
    assert after["sys_updated_by"] == "admin"
    put = snow.put(url, json={"impact": "2", "urgency": "3", "nonsense_field": "ignored"})
    assert put.json()["result"]["priority"] == "4"
    assert "nonsense_field" not in put.json()["result"]


def test_create_answers_201_with_the_recorded_field_set(
    snow: httpx.Client, sandbox: RunningSandbox
) -> None:
    response = snow.post(INC, json={})
    assert response.status_code == 201
    result = response.json()["result"]
    assert response.headers["location"] == f"{sandbox.url}{INC}/{result['sys_id']}"
    assert re.fullmatch(r"[0-9a-f]{32}", result["sys_id"])
    assert re.fullmatch(r"INC00101[6-9][0-9]", result["number"])
    fixture_path = FIXTURES / "now" / "table" / "{tableName}" / "POST" / "201.json"
    if fixture_path.exists():  # the contract suite requires it; here it is a bonus check
        recorded = json.loads(fixture_path.read_text())["result"]
        assert set(result) == set(recorded)
        volatile = {
            "sys_id",
            "number",
            "task_effective_number",
            "opened_at",
            "sys_created_on",
            "sys_updated_on",
        }
        defaults = {k: v for k, v in recorded.items() if isinstance(v, str) and k not in volatile}
        assert {k: result[k] for k in defaults} == defaults
    assert snow.delete(f"{INC}/{result['sys_id']}").status_code == 204
    assert snow.get(f"{INC}/{result['sys_id']}").status_code == 404


def test_work_notes_go_to_the_journal_not_the_record(snow: httpx.Client) -> None:
    sys_id = incident(snow, 137)["sys_id"]  # a new incident: no work notes yet
    for body in (
        {"work_notes": "Internal: checked logs"},
        {"comments": "We are on it"},
        {"work_notes": "Internal: escalated"},
    ):
        assert snow.patch(f"{INC}/{sys_id}", json=body).json()["result"]["work_notes"] == ""
    assert sorted(notes(snow, sys_id)) == ["Internal: checked logs", "Internal: escalated"]
    assert "We are on it" in notes(snow, sys_id, "comments")
    shown = snow.get(
        f"{INC}/{sys_id}", params={"sysparm_display_value": "true", "sysparm_fields": "work_notes"}
    ).json()
    assert "System Administrator (Work notes)\nInternal: escalated" in shown["result"]["work_notes"]


def test_reference_and_display_value_options(snow: httpx.Client, sandbox: RunningSandbox) -> None:
    sys_id = incident(snow, 132)["sys_id"]
    bob = snow.get(USERS, params={"sysparm_query": "user_name=bob.agent"}).json()["result"][0]
    snow.patch(f"{INC}/{sys_id}", json={"assigned_to": bob["sys_id"]})
    url = f"{INC}/{sys_id}"
    fields = {"sysparm_fields": "assigned_to,state,assigned_to.email"}
    plain = snow.get(url, params=fields).json()["result"]
    assert plain["assigned_to"] == {
        "link": f"{sandbox.url}{USERS}/{bob['sys_id']}",
        "value": bob["sys_id"],
    }
    assert plain["assigned_to.email"] == "bob@acme.test"
    bare = snow.get(url, params={**fields, "sysparm_exclude_reference_link": "true"}).json()
    assert bare["result"]["assigned_to"] == bob["sys_id"]
    both = snow.get(url, params={**fields, "sysparm_display_value": "all"}).json()["result"]
    assert both["assigned_to"]["display_value"] == "Bob Agent"
    assert both["state"] == {"display_value": "In Progress", "value": "2"}


# --------------------------------------------------------------------------- queries


def test_user_lookup_by_email(snow: httpx.Client) -> None:
    query = {"sysparm_query": "email=CAROL@acme.test^active=true"}
    [carol] = snow.get(USERS, params=query).json()["result"]
    assert (carol["user_name"], carol["name"], carol["active"]) == (
        "carol.agent",
        "Carol Agent",
        "true",
    )
    inactive = {"sysparm_query": "email=olivia@acme.test^active=true"}
    assert snow.get(USERS, params=inactive).json()["result"] == []
    assert snow.get(f"{USERS}/{carol['sys_id']}").json()["result"]["email"] == "carol@acme.test"


def test_double_caret_is_a_literal_caret(snow: httpx.Client) -> None:
    # Unescaped, this would be "no such email OR the admin".
    injected = {"sysparm_query": "email=nobody@x.test^^ORuser_name=admin"}
    assert snow.get(USERS, params=injected).json()["result"] == []
    open_query = {"sysparm_query": "email=nobody@x.test^ORuser_name=admin"}
    assert [u["user_name"] for u in snow.get(USERS, params=open_query).json()["result"]] == [
        "admin"
    ]
    created = snow.post(INC, json={"short_description": "a^b"}).json()["result"]
    found = snow.get(INC, params={"sysparm_query": "short_description=a^^b"}).json()["result"]
    assert [r["sys_id"] for r in found] == [created["sys_id"]]


def test_operators_ordering_and_invalid_queries(snow: httpx.Client) -> None:
    def numbers(query: str) -> list[str]:
        result = snow.get(INC, params={"sysparm_query": query, "sysparm_fields": "number"})
        return [r["number"] for r in result.json()["result"]]

    assert numbers("numberSTARTSWITHINC001010^ORDERBYDESCnumber")[:2] == [
        "INC0010109",
        "INC0010108",
    ]
    assert numbers("numberININC0010101,INC0010102") == ["INC0010101", "INC0010102"]
    assert numbers("short_descriptionLIKEprinter^numberENDSWITH01") == []
    assert "INC0010105" in numbers("state=6^ORstate=7")
    assert numbers("no_such_field=1") == []  # invalid queries return no rows


def test_pagination_follows_link_headers_to_the_end(snow: httpx.Client) -> None:
    url: str | None = f"{INC}?sysparm_limit=7&sysparm_query=ORDERBYnumber&sysparm_fields=number"
    pages: list[httpx.Response] = []
    while url:
        pages.append(snow.get(url))
        url = links(pages[-1]).get("next")
    seen = [r["number"] for page in pages for r in page.json()["result"]]
    total = int(pages[0].headers["x-total-count"])
    assert len(seen) == len(set(seen)) == total >= 60
    assert {f"INC{n:07d}" for n in range(10101, 10161)} <= set(seen)
    assert seen == sorted(seen)
    assert set(links(pages[0])) == {"first", "next", "last"}
    assert set(links(pages[-1])) == {"first", "prev", "last"}
    assert links(pages[0])["last"] == str(pages[-1].url)


def test_field_metadata_from_sys_dictionary_and_sys_choice(snow: httpx.Client) -> None:
    query = {"sysparm_query": "name=incident^element=priority"}
    [priority] = snow.get("/api/now/table/sys_dictionary", params=query).json()["result"]
    assert priority["internal_type"]["value"] == "integer"
    assert (priority["column_label"], priority["mandatory"], priority["choice"]) == (
        "Priority",
        "false",
        "3",
    )
    query = {"sysparm_query": "name=incident^element=priority^ORDERBYsequence"}
    choices = snow.get("/api/now/table/sys_choice", params=query).json()["result"]
    assert (choices[0]["value"], choices[0]["label"]) == ("1", "1 - Critical")
    assert [c["value"] for c in choices] == ["1", "2", "3", "4", "5"]


# --------------------------------------------------------------------------- errors


def test_data_policy_refuses_resolving_without_close_info(snow: httpx.Client) -> None:
    sys_id = incident(snow, 133)["sys_id"]
    refused = snow.patch(f"{INC}/{sys_id}", json={"state": "6"})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "message": "Operation Failed",
            "detail": "Data Policy Exception: The following fields are mandatory: "
            "Resolution code, Resolution notes",
        },
        "status": "failure",
    }
    assert snow.get(f"{INC}/{sys_id}").json()["result"]["state"] != "6"
    close = {"state": "6", "close_code": "Solution provided", "close_notes": "Rebooted"}
    resolved = snow.patch(f"{INC}/{sys_id}", json=close).json()["result"]
    assert (resolved["state"], resolved["incident_state"]) == ("6", "6")
    assert resolved["resolved_at"]


def test_malformed_json_is_400(snow: httpx.Client) -> None:
    response = snow.post(INC, content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Exception while reading request"
    assert response.json()["status"] == "failure"


def test_not_found_bodies(snow: httpx.Client) -> None:
    for response in (
        snow.get(f"{INC}/{'0' * 32}"),
        snow.patch(f"{INC}/{'0' * 32}", json={}),
        snow.delete(f"{INC}/{'0' * 32}"),
    ):
        assert (response.status_code, response.json()) == (404, NO_RECORD)
    bad_table = snow.get("/api/now/table/incidents")
    assert bad_table.status_code == 404
    assert bad_table.json() == {
        "error": {"message": "Invalid table incidents", "detail": None},
        "status": "failure",
    }
    unknown = snow.get("/api/now/nothing/here")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == "Requested URI does not represent any resource"


# --------------------------------------------------------------------------- limits and faults


def test_hourly_rate_limit_rule(snow: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.control(rate_limit_per_hour=3)
    for _ in range(3):
        response = snow.get(f"{INC}", params={"sysparm_limit": 1})
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-RateLimit-Rule"])
        assert abs(int(response.headers["X-RateLimit-Reset"]) - (time.time() + 3600)) < 60
    limited = snow.get(f"{INC}", params={"sysparm_limit": 1})
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.json()["error"]["message"] == "Rate limit exceeded"
    assert token(sandbox, grant_type="client_credentials").status_code == 200  # not a REST API
    sandbox.control(rate_limit_per_hour=None)
    unruled = snow.get(f"{INC}", params={"sysparm_limit": 1})
    assert unruled.status_code == 200
    assert "X-RateLimit-Limit" not in unruled.headers


def test_instance_wide_limit_is_429_with_retry_after(
    snow: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.control(rate_limit_per_minute=2)
    assert [snow.get(USERS).status_code for _ in range(2)] == [200, 200]
    limited = snow.get(USERS)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["status"] == "failure"


def test_injected_errors_happen_before_the_write(
    snow: httpx.Client, sandbox: RunningSandbox
) -> None:
    sys_id = incident(snow, 134)["sys_id"]
    sandbox.control(error_rates={"503": 1.0})
    response = snow.patch(f"{INC}/{sys_id}", json={"short_description": "should not land"})
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    sandbox.control(error_rates={"429": 1.0})
    assert snow.get(f"{INC}/{sys_id}").json()["error"]["message"] == "Rate limit exceeded"
    sandbox.reset()
    assert snow.get(f"{INC}/{sys_id}").json()["result"]["short_description"] != "should not land"
    assert sandbox.stats()["injected"] == {}


def test_drop_after_write_commits_then_cuts_the_connection(
    snow: httpx.Client, sandbox: RunningSandbox
) -> None:
    sys_id = incident(snow, 135)["sys_id"]
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        snow.patch(f"{INC}/{sys_id}", json={"work_notes": "lost reply"})
    with pytest.raises(httpx.TransportError):
        snow.post(INC, json={"short_description": "dropped create", "correlation_id": "k-1"})
    assert notes(snow, sys_id) == ["lost reply"]
    query = {"sysparm_query": "correlation_id=k-1"}
    assert [r["short_description"] for r in snow.get(INC, params=query).json()["result"]] == [
        "dropped create"
    ]
    assert sandbox.stats()["dropped_after_write"] == 2


def test_control_knows_token_ttl(sandbox: RunningSandbox) -> None:
    bad = httpx.post(f"{sandbox.url}/_control", json={"token_ttl_seconds": 0})
    assert (bad.status_code, bad.json()["key"]) == (400, "token_ttl_seconds")
    unknown = httpx.post(f"{sandbox.url}/_control", json={"token_ttl": 5})
    assert (unknown.status_code, unknown.json()["key"]) == (400, "token_ttl")
    settings = sandbox.control(token_ttl_seconds=60, latency_ms=0)["settings"]
    assert (settings["token_ttl_seconds"], settings["rate_limit_per_hour"]) == (60, 100_000)
    sandbox.reset()
    assert httpx.get(f"{sandbox.url}/_control").json()["settings"]["token_ttl_seconds"] == 1800


# --------------------------------------------------------------------------- lifecycle


def test_records_credentials_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "servicenow") as first:
        creds = first.credentials
        issued = token(first, grant_type="password").json()["access_token"]
        with httpx.Client(base_url=first.url, auth=(creds["username"], creds["password"])) as c:
            sys_id = incident(c, 140)["sys_id"]
            c.patch(f"{INC}/{sys_id}", json={"work_notes": "before restart", "urgency": "1"})
    with serve_sandbox(tmp_path, "servicenow") as second:
        assert second.credentials == creds
        with httpx.Client(base_url=second.url, auth=(creds["username"], creds["password"])) as c:
            assert c.get(f"{INC}/{sys_id}").json()["result"]["urgency"] == "1"
            assert notes(c, sys_id) == ["before restart"]
            assert c.get(INC, params={"sysparm_limit": 1}).headers["x-total-count"] == "60"
        assert bearer(second, issued).status_code == 200
    assert sandbox_credentials(tmp_path, "servicenow") == creds
    account = sandbox_accounts(tmp_path, "http://127.0.0.1:8080")["servicenow"]
    assert account["base_url"] == "http://127.0.0.1:8080/sandbox/servicenow"
    assert account["client_id"] == creds["client_id"]


def test_an_older_sandbox_file_gains_companies_and_contacts(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "servicenow") as first:
        creds = first.credentials
    # The file as a sandbox from before companies and contacts left it.
    with sqlite3.connect(tmp_path / "sandboxes" / "servicenow.sqlite3") as db:
        db.execute("DELETE FROM records WHERE tbl IN ('core_company', 'customer_contact')")
        db.execute(
            "DELETE FROM records WHERE tbl IN ('sys_dictionary', 'sys_choice') AND "
            "json_extract(data, '$.name') IN ('core_company', 'customer_contact')"
        )
        db.execute("DELETE FROM sandbox_meta WHERE key = 'customers_seeded'")
    with serve_sandbox(tmp_path, "servicenow") as second:
        assert second.credentials == creds
        with httpx.Client(base_url=second.url, auth=(creds["username"], creds["password"])) as c:
            assert count(c, COMPANIES) == 4
            assert count(c, CONTACTS) == 6
            query = {"sysparm_query": "name=core_company^element=name"}
            [name] = c.get("/api/now/table/sys_dictionary", params=query).json()["result"]
            assert name["mandatory"] == "true"
            assert c.get(INC, params={"sysparm_limit": 1}).headers["x-total-count"] == "60"
    with (
        serve_sandbox(tmp_path, "servicenow") as third,  # and only once
        httpx.Client(base_url=third.url, auth=(creds["username"], creds["password"])) as c,
    ):
        assert count(c, COMPANIES) == 4


# --------------------------------------------------------------------------- the vendor's client


def _pysnow_host(sandbox: RunningSandbox) -> str:
    # pysnow builds "http://{host}/api/now/…"; a host with the mount path aims it at the sandbox.
    return sandbox.url.removeprefix("http://")


def test_pysnow_client_queries_updates_and_creates(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    with pysnow.Client(
        host=_pysnow_host(sandbox),
        user=creds["username"],
        password=creds["password"],
        use_ssl=False,
    ) as client:
        incidents = client.resource(api_path="/table/incident")
        record = incidents.get(query={"number": "INC0010141"}).one()
        assert record["number"] == "INC0010141"
        updated = incidents.update(
            query={"number": "INC0010141"}, payload={"impact": "1", "urgency": "1"}
        ).one()
        assert updated["priority"] == "1"
        created = incidents.create(payload={"short_description": "From pysnow"}).one()
        assert created["number"].startswith("INC")
        users = client.resource(api_path="/table/sys_user")
        query = pysnow.QueryBuilder().field("email").equals("alice@acme.test").AND()
        query = query.field("active").equals("true")
        alice = users.get(query=query, fields=["sys_id", "name"]).one()
        assert alice["name"] == "Alice Agent"
        assert set(alice) == {"sys_id", "name"}


def test_pysnow_oauth_client_gets_and_uses_a_token(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests-oauthlib refuses plain-HTTP token endpoints unless told this is a test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    creds = sandbox.credentials
    client = pysnow.OAuthClient(
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        host=_pysnow_host(sandbox),
        use_ssl=False,
    )
    issued = client.generate_token(creds["username"], creds["password"])
    assert issued["token_type"] == "Bearer"
    client.set_token(issued)
    try:
        record = client.resource(api_path="/table/incident").get(query={"number": "INC0010142"})
        assert record.one()["number"] == "INC0010142"
    finally:
        client.close()
    assert sandbox.stats()["token_requests_by_grant_type"] == {"password": 1}


def operation_failed(detail: str) -> dict[str, Any]:
    return {"error": {"message": "Operation Failed", "detail": detail}, "status": "failure"}


def one(client: httpx.Client, path: str, query: str, **params: str) -> dict[str, Any]:
    [record] = client.get(path, params={"sysparm_query": query, **params}).json()["result"]
    result: dict[str, Any] = record
    return result


def count(client: httpx.Client, path: str) -> int:
    return int(client.get(path, params={"sysparm_limit": "1"}).headers["x-total-count"])


# ------------------------------------------------------------------- companies (core_company)


def test_seeded_companies_page_through_link_headers(snow: httpx.Client) -> None:
    url: str | None = f"{COMPANIES}?sysparm_limit=3&sysparm_query=ORDERBYname&sysparm_fields=name"
    names: list[str] = []
    while url:
        page = snow.get(url)
        names += [r["name"] for r in page.json()["result"]]
        found = re.findall(r'<([^>]+)>;rel="(\w+)"', page.headers["link"])
        url = {rel: link for link, rel in found}.get("next")
    assert names[:4] == ["Globochem GmbH", "Initrode Ltd", "Penetrode Inc", "Vandelay Industries"]
    assert len(names) == count(snow, COMPANIES)


def test_company_create_read_update(snow: httpx.Client, sandbox: RunningSandbox) -> None:
    body = {"name": "Chotchkie's", "phone": "+1 512 555 0177", "country": "USA", "notes": "Flair"}
    created = snow.post(COMPANIES, json=body)
    assert created.status_code == 201
    record = created.json()["result"]
    sys_id = record["sys_id"]
    assert created.headers["location"] == f"{sandbox.url}{COMPANIES}/{sys_id}"
    assert {k: record[k] for k in body} == body
    assert (record["sys_class_name"], record["customer"], record["sys_mod_count"]) == (
        "core_company",
        "false",
        "0",
    )

    snow.patch(f"{COMPANIES}/{sys_id}", json={"website": "https://chotchkies.test"})
    snow.put(f"{COMPANIES}/{sys_id}", json={"phone": "+1 512 555 0178"})
    after = snow.get(f"{COMPANIES}/{sys_id}").json()["result"]
    assert (after["website"], after["phone"], after["name"]) == (
        "https://chotchkies.test",
        "+1 512 555 0178",
        "Chotchkie's",
    )
    assert after["sys_mod_count"] == "2"


def test_company_without_a_name_is_refused_by_the_data_policy(snow: httpx.Client) -> None:
    before = count(snow, COMPANIES)
    refused = snow.post(COMPANIES, json={"phone": "+1 212 555 0100", "website": "x.test"})
    assert refused.status_code == 403
    assert refused.json() == operation_failed(
        "Data Policy Exception: The following fields are mandatory: Name"
    )
    assert count(snow, COMPANIES) == before

    initrode = one(snow, COMPANIES, "name=Initrode Ltd")
    blanked = snow.patch(f"{COMPANIES}/{initrode['sys_id']}", json={"name": "  "})
    assert blanked.status_code == 403
    assert blanked.json()["error"]["detail"].endswith("mandatory: Name")
    assert snow.get(f"{COMPANIES}/{initrode['sys_id']}").json()["result"]["name"] == (
        "Initrode Ltd"
    )


def test_uwf_key_is_unique_per_table(snow: httpx.Client) -> None:
    key = "exec-unique:create"
    first = snow.post(COMPANIES, json={"name": "Key Holder", "u_uwf_key": key})
    assert first.status_code == 201
    second = snow.post(COMPANIES, json={"name": "Key Thief", "u_uwf_key": key.upper()})
    assert second.status_code == 403
    assert second.json() == operation_failed("Error during insert of core_company (Key Thief)")
    assert (
        len(snow.get(COMPANIES, params={"sysparm_query": f"u_uwf_key={key}"}).json()["result"]) == 1
    )
    # Another table's column of the same name is another index.
    contact = snow.post(CONTACTS, json={"last_name": "Keyed", "u_uwf_key": key})
    assert contact.status_code == 201


# --------------------------------------------------------------- contacts (customer_contact)


def test_contact_create_computes_its_name_and_references_its_company(
    snow: httpx.Client, sandbox: RunningSandbox
) -> None:
    vandelay = one(snow, COMPANIES, "name=Vandelay Industries")["sys_id"]
    body = {"first_name": "Elaine", "last_name": "Benes", "email": "elaine@vandelay.test",
            "mobile_phone": "+1 917 555 0111", "title": "Reader", "company": vandelay}  # fmt: skip
    created = snow.post(CONTACTS, json=body)
    assert created.status_code == 201
    record = created.json()["result"]
    assert record["name"] == "Elaine Benes"
    assert record["company"] == {"link": f"{sandbox.url}{COMPANIES}/{vandelay}", "value": vandelay}
    assert (record["sys_class_name"], record["active"], record["locked_out"]) == (
        "customer_contact",
        "true",
        "false",
    )
    shown = snow.get(
        f"{CONTACTS}/{record['sys_id']}",
        params={"sysparm_display_value": "true", "sysparm_exclude_reference_link": "true"},
    ).json()["result"]
    assert shown["company"] == "Vandelay Industries"
    renamed = snow.patch(f"{CONTACTS}/{record['sys_id']}", json={"last_name": "Seinfeld"})
    assert renamed.json()["result"]["name"] == "Elaine Seinfeld"


def test_contacts_are_users(snow: httpx.Client) -> None:
    art = one(snow, USERS, "email=art@vandelay.test", sysparm_fields="sys_id,name,sys_class_name")
    assert (art["name"], art["sys_class_name"]) == ("Art Vandelay", "customer_contact")
    as_user = snow.get(f"{USERS}/{art['sys_id']}").json()["result"]
    assert "account" not in as_user  # only sys_user's columns through sys_user

    snow.patch(f"{USERS}/{art['sys_id']}", json={"title": "Importer"})
    as_contact = snow.get(f"{CONTACTS}/{art['sys_id']}").json()["result"]
    assert (as_contact["title"], as_contact["sys_class_name"]) == ("Importer", "customer_contact")
    assert as_contact["account"]["value"] == as_contact["company"]["value"]
    # Agents are users but not contacts.
    assert snow.get(CONTACTS, params={"sysparm_query": "email=alice@acme.test"}).json() == {
        "result": []
    }


def test_user_name_is_unique_across_users_and_contacts(snow: httpx.Client) -> None:
    taken = snow.post(CONTACTS, json={"user_name": "ART.VANDELAY", "first_name": "Arthur",
                                      "last_name": "Other"})  # fmt: skip
    assert taken.status_code == 403
    assert taken.json() == operation_failed(
        "Error during insert of customer_contact (Arthur Other)"
    )
    agent = snow.post(USERS, json={"user_name": "peter.gibbons", "name": "Peter Two"})
    assert agent.json() == operation_failed("Error during insert of sys_user (Peter Two)")

    george = one(snow, CONTACTS, "email=george.costanza@vandelay.test")
    update = snow.patch(f"{CONTACTS}/{george['sys_id']}", json={"user_name": "alice.agent"})
    assert update.status_code == 403
    assert update.json() == operation_failed(
        "Error during update of customer_contact (George Costanza)"
    )
    # Blank user names are not duplicates of one another.
    for last in ("Blank One", "Blank Two"):
        assert snow.post(CONTACTS, json={"last_name": last}).status_code == 201


# ------------------------------------------------------------- company and contact errors


@pytest.mark.parametrize("path", [COMPANIES, CONTACTS])
def test_unknown_sys_ids_and_missing_auth(
    snow: httpx.Client, sandbox: RunningSandbox, path: str
) -> None:
    missing = f"{path}/{'0' * 32}"
    for response in (snow.get(missing), snow.patch(missing, json={}), snow.delete(missing)):
        assert (response.status_code, response.json()) == (404, NO_RECORD)
    # A company is no contact: the sys_id of one is unknown to the other table.
    other = COMPANIES if path == CONTACTS else CONTACTS
    some = snow.get(other, params={"sysparm_limit": "1"}).json()["result"][0]["sys_id"]
    assert snow.get(f"{path}/{some}").status_code == 404

    anonymous = httpx.get(f"{sandbox.url}{path}", timeout=10)
    assert (anonymous.status_code, anonymous.json()) == (401, NOT_AUTHENTICATED)
    wrong = httpx.post(f"{sandbox.url}{path}", json={"name": "x"}, auth=("admin", "nope"))
    assert (wrong.status_code, wrong.json()) == (401, NOT_AUTHENTICATED)


def test_dictionary_and_choices_of_companies_and_contacts(snow: httpx.Client) -> None:
    def columns(table: str) -> dict[str, dict[str, Any]]:
        query = {"sysparm_query": f"name={table}", "sysparm_exclude_reference_link": "true"}
        rows = snow.get("/api/now/table/sys_dictionary", params=query).json()["result"]
        return {row["element"]: row for row in rows}

    company = columns("core_company")
    assert (company["name"]["mandatory"], company["name"]["column_label"]) == ("true", "Name")
    assert company["u_uwf_key"]["internal_type"] == "string"
    contact = columns("customer_contact")
    # The contact's own columns; inherited ones are sys_user's rows.
    assert {"account", "u_uwf_key"} <= set(contact)
    assert "email" not in contact
    assert "email" in columns("sys_user")
    assert contact["account"]["reference"] == "customer_account"

    query = {"sysparm_query": "name=core_company^element=rank_tier^ORDERBYsequence"}
    choices = snow.get("/api/now/table/sys_choice", params=query).json()["result"]
    assert [c["value"] for c in choices] == [
        "strategic",
        "tactical",
        "valued",
        "other",
        "blacklist",
    ]
