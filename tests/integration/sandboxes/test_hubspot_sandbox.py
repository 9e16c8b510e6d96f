"""The HubSpot sandbox over real HTTP: what a HubSpot integration would notice.

Records persist for the whole module (one server), so each test picks its own tickets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from uwf.sandboxes import sandbox_credentials

from .conftest import RunningSandbox, serve_sandbox

ADMIN, ALICE, BOB, CAROL, DAN = 41000001, 41000002, 41000003, 41000004, 41000005
TICKETS = "/crm/v3/objects/tickets"
NOTE_TO_TICKET = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 228}]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Overrides the package's Zendesk sandbox: one HubSpot server per module."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "hubspot") as running:
        yield running


def bearer(sandbox: RunningSandbox, token: str | None = None) -> httpx.Client:
    token = token or sandbox.credentials["private_app_token"]
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=sandbox.url, headers=headers, timeout=10)


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with bearer(sandbox) as client:
        yield client


def oauth(sandbox: RunningSandbox, **fields: str) -> httpx.Response:
    creds = sandbox.credentials
    form = {"client_id": creds["client_id"], "client_secret": creds["client_secret"], **fields}
    return httpx.post(f"{sandbox.url}/oauth/v1/token", data=form, timeout=10)


def refreshed(sandbox: RunningSandbox) -> dict[str, Any]:
    response = oauth(
        sandbox, grant_type="refresh_token", refresh_token=sandbox.credentials["refresh_token"]
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def note(body: str, ticket: int, **extra: str) -> dict[str, Any]:
    props = {"hs_note_body": body, "hs_timestamp": "2024-06-01T12:00:00Z", **extra}
    return {
        "properties": props,
        "associations": [{"to": {"id": str(ticket)}, "types": NOTE_TO_TICKET}],
    }


def search(api: httpx.Client, otype: str, **body: Any) -> httpx.Response:
    return api.post(f"/crm/v3/objects/{otype}/search", json=body)


def by_key(key: str) -> list[dict[str, Any]]:
    return [{"filters": [{"propertyName": "uwf_key", "operator": "EQ", "value": key}]}]


# --------------------------------------------------------------------------- auth


def test_private_app_token_and_rate_limit_headers(api: httpx.Client) -> None:
    response = api.get(f"{TICKETS}/1101")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.headers["x-hubspot-ratelimit-max"] == "190"
    assert response.headers["x-hubspot-ratelimit-interval-milliseconds"] == "10000"
    assert int(response.headers["x-hubspot-ratelimit-remaining"]) < 190
    assert response.headers["x-hubspot-ratelimit-daily"] == "1000000"
    assert int(response.headers["x-hubspot-ratelimit-daily-remaining"]) < 1_000_000
    assert len(response.headers["x-hubspot-correlation-id"]) == 36


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer pat-na1-wrong"}, {"Authorization": "Basic eDp5"}]
)
def test_missing_or_wrong_token_is_401(sandbox: RunningSandbox, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sandbox.url}{TICKETS}/1101", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["correlationId"] == response.headers["x-hubspot-correlation-id"]
    assert response.headers["x-hubspot-auth-failure"] == "401 Unauthorized"


def test_refresh_token_grant_is_not_rotated(sandbox: RunningSandbox) -> None:
    first, second = refreshed(sandbox), refreshed(sandbox)
    assert first["token_type"] == "bearer"
    assert first["expires_in"] == 1800
    # HubSpot hands back the same refresh token; both access tokens stay valid.
    assert first["refresh_token"] == second["refresh_token"] == sandbox.credentials["refresh_token"]
    assert first["access_token"] != second["access_token"]
    for token in (first["access_token"], second["access_token"]):
        with bearer(sandbox, token) as client:
            response = client.get(f"{TICKETS}/1102")
        assert response.status_code == 200
        assert "x-hubspot-ratelimit-daily" not in response.headers  # OAuth: no daily limit


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "na1-nope"}, "BAD_REFRESH_TOKEN"),
        ({"grant_type": "refresh_token", "client_secret": "wrong"}, "BAD_CLIENT_SECRET"),
        ({"grant_type": "refresh_token", "client_id": "wrong"}, "BAD_CLIENT_ID"),
        ({"grant_type": "password"}, "BAD_GRANT_TYPE"),
        ({"grant_type": "authorization_code", "code": "never-issued"}, "BAD_AUTH_CODE"),
    ],
)
def test_token_errors_use_hubspots_status_codes(
    sandbox: RunningSandbox, fields: dict[str, str], status: str
) -> None:
    response = oauth(sandbox, **fields)
    assert response.status_code == 400
    assert response.json()["status"] == status
    assert response.json()["message"]


def test_authorization_code_grant_and_client_credentials(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    query = {"client_id": creds["client_id"], "redirect_uri": creds["redirect_uri"], "state": "s1"}
    redirect = httpx.get(f"{sandbox.url}/oauth/authorize", params=query)
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == creds["redirect_uri"]
    params = parse_qs(location.query)
    assert params["state"] == ["s1"]
    grant = {"grant_type": "authorization_code", "code": params["code"][0]}
    wrong_uri = oauth(sandbox, **grant, redirect_uri="http://evil.test/cb")
    assert wrong_uri.json()["status"] == "BAD_REDIRECT_URI"
    tokens = oauth(sandbox, **grant, redirect_uri=creds["redirect_uri"]).json()
    assert tokens["refresh_token"].startswith("na1-")
    assert tokens["refresh_token"] != creds["refresh_token"]
    again = oauth(sandbox, **grant, redirect_uri=creds["redirect_uri"])
    assert again.json()["status"] == "BAD_AUTH_CODE"  # codes are single-use
    renewed = oauth(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert renewed.status_code == 200
    app_token = oauth(sandbox, grant_type="client_credentials").json()
    assert "refresh_token" not in app_token
    with bearer(sandbox, app_token["access_token"]) as client:
        assert client.get("/crm/v3/owners").status_code == 200


def test_expired_access_token_is_401_and_token_requests_are_counted(
    sandbox: RunningSandbox,
) -> None:
    sandbox.control(token_ttl_seconds=0)
    expired = refreshed(sandbox)
    assert expired["expires_in"] == 0
    with bearer(sandbox, expired["access_token"]) as client:
        response = client.get(f"{TICKETS}/1103")
    assert response.status_code == 401
    body = response.json()
    assert body["category"] == "EXPIRED_AUTHENTICATION"
    assert body["message"].startswith("The OAuth token used to make this call expired")
    sandbox.control(token_ttl_seconds=1800)
    fresh = refreshed(sandbox)
    with bearer(sandbox, fresh["access_token"]) as client:
        assert client.get(f"{TICKETS}/1103").status_code == 200
    oauth(sandbox, grant_type="client_credentials")
    stats = sandbox.stats()
    assert stats["token_requests"] == 3
    assert stats["token_requests_by_grant_type"] == {"client_credentials": 1, "refresh_token": 2}


# --------------------------------------------------------------------------- tickets


def test_quickstart_ticket_1123(api: httpx.Client) -> None:
    default = api.get(f"{TICKETS}/1123").json()
    assert default["id"] == "1123"
    assert "hubspot_owner_id" not in default["properties"]  # not a default property
    assert default["properties"]["hs_ticket_priority"] == "MEDIUM"
    assert default["properties"]["hs_pipeline_stage"] == "1"
    assert default["createdAt"].endswith(".000Z")
    wanted = api.get(f"{TICKETS}/1123", params={"properties": "hubspot_owner_id,nonsense"})
    assert wanted.json()["properties"] == {"hubspot_owner_id": None}
    notes = api.get("/crm/v4/objects/tickets/1123/associations/notes").json()
    assert notes == {"results": []}


def test_update_then_read_back(api: httpx.Client) -> None:
    props = {"hs_ticket_priority": "URGENT", "hubspot_owner_id": str(CAROL), "subject": "Hot"}
    response = api.patch(f"{TICKETS}/1104", json={"properties": props})
    assert response.status_code == 200
    assert {k: response.json()["properties"][k] for k in props} == props
    # Repeated `properties=` parameters, as HubSpot's client library sends them.
    params = {"properties": ["hs_ticket_priority", "hubspot_owner_id"]}
    read = api.get(f"{TICKETS}/1104", params=params).json()["properties"]
    assert read == {"hs_ticket_priority": "URGENT", "hubspot_owner_id": str(CAROL)}
    cleared = api.patch(f"{TICKETS}/1104", json={"properties": {"hubspot_owner_id": ""}})
    assert "hubspot_owner_id" not in cleared.json()["properties"]


def test_create_requires_subject_and_status(api: httpx.Client) -> None:
    response = api.post(TICKETS, json={"properties": {"subject": "No status"}})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Error creating TICKET.  Some required properties were not set."
    assert body["context"] == {"properties": ["hs_pipeline_stage"]}
    props = {"subject": "Created", "hs_pipeline_stage": "2", "content": "Body"}
    created = api.post(TICKETS, json={"properties": props})
    assert created.status_code == 201
    ticket = created.json()
    assert int(ticket["id"]) >= 2001
    assert ticket["properties"]["hs_pipeline"] == "0"
    assert api.get(f"{TICKETS}/{ticket['id']}").json()["properties"]["subject"] == "Created"


def test_batch_upsert_by_unique_property_is_idempotent(api: httpx.Client) -> None:
    props = {"subject": "Upserted", "hs_pipeline_stage": "1"}
    body = {"inputs": [{"idProperty": "uwf_key", "id": "exec-1:ticket", "properties": props}]}
    first = api.post(f"{TICKETS}/batch/upsert", json=body)
    again = api.post(f"{TICKETS}/batch/upsert", json=body)
    assert (first.status_code, again.status_code) == (200, 200)
    one, two = first.json()["results"][0], again.json()["results"][0]
    assert (one["new"], two["new"]) == (True, False)
    assert one["id"] == two["id"]
    assert one["properties"]["uwf_key"] == "exec-1:ticket"
    by_property = api.get(f"{TICKETS}/exec-1:ticket", params={"idProperty": "uwf_key"})
    assert by_property.json()["id"] == one["id"]
    duplicate = {
        "properties": {"subject": "Dup", "hs_pipeline_stage": "1", "uwf_key": "exec-1:ticket"}
    }
    conflict = api.post(TICKETS, json=duplicate)
    assert conflict.status_code == 409
    assert conflict.json()["category"] == "CONFLICT"
    assert conflict.json()["message"].endswith(f"Existing ID: {one['id']}")
    twice = {"inputs": body["inputs"] * 2}
    assert "Duplicate IDs" in api.post(f"{TICKETS}/batch/upsert", json=twice).json()["message"]


def test_batch_read_reports_missing_ids_with_207(api: httpx.Client) -> None:
    body = {"inputs": [{"id": "1105"}, {"id": "999999"}], "properties": ["subject"]}
    response = api.post(f"{TICKETS}/batch/read", json=body)
    assert response.status_code == 207
    result = response.json()
    assert result["status"] == "COMPLETE"
    assert [r["id"] for r in result["results"]] == ["1105"]
    assert result["numErrors"] == 1
    assert result["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert result["errors"][0]["context"] == {"ids": ["999999"]}
    too_many = {"inputs": [{"id": str(n)} for n in range(101)]}
    assert api.post(f"{TICKETS}/batch/read", json=too_many).status_code == 400


@pytest.mark.parametrize(
    ("props", "code", "message"),
    [
        ({"hs_ticket_priority": "ASAP"}, "INVALID_OPTION",
         "ASAP was not one of the allowed options: [LOW, MEDIUM, HIGH, URGENT]"),
        ({"nonsense": "x"}, "PROPERTY_DOESNT_EXIST", 'Property "nonsense" does not exist'),
        ({"hubspot_owner_id": "12345"}, "INVALID_OWNER_ID", "12345 is not a valid owner id"),
        ({"hubspot_owner_id": str(DAN)}, "INVALID_OWNER_ID", f"{DAN} is not a valid owner id"),
        ({"createdate": "0"}, "READ_ONLY_VALUE",
         '"createdate" is a read only property; its value cannot be set.'),
    ],
)  # fmt: skip
def test_invalid_values_are_400_validation_error(
    api: httpx.Client, props: dict[str, str], code: str, message: str
) -> None:
    response = api.patch(f"{TICKETS}/1106", json={"properties": props})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: [")
    detail = body["message"].removeprefix("Property values were not valid: ")
    [error] = json.loads(detail)
    assert (error["error"], error["message"], error["isValid"]) == (code, message, False)


def test_malformed_json_and_unknown_object_type(api: httpx.Client) -> None:
    broken = api.patch(
        f"{TICKETS}/1106", content=b'{"properties": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["message"].startswith("Invalid input JSON on line 1")
    unknown = api.get("/crm/v3/objects/spaceships/1")
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "Unable to infer object type from: spaceships"


@pytest.mark.parametrize(
    "path", [f"{TICKETS}/999999", f"{TICKETS}/abc", "/crm/v3/owners/424242", "/crm/v3/nothing"]
)
def test_unknown_records_are_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response.json()["status"] == "error"
    assert response.json()["message"] == "resource not found"


# --------------------------------------------------------------------------- notes


def test_note_needs_a_timestamp_then_is_listed_on_the_ticket(api: httpx.Client) -> None:
    untimed = note("No time", 1107)
    del untimed["properties"]["hs_timestamp"]
    response = api.post("/crm/v3/objects/notes", json=untimed)
    assert response.status_code == 400
    assert (
        response.json()["message"] == "Error creating NOTE.  Some required properties were not set."
    )
    assert response.json()["context"] == {"properties": ["hs_timestamp"]}

    created = api.post(
        "/crm/v3/objects/notes", json=note("Internal <b>note</b>", 1107, uwf_key="n-1")
    )
    assert created.status_code == 201
    note_id = created.json()["id"]
    assert created.json()["properties"]["hs_timestamp"] == "2024-06-01T12:00:00.000Z"
    listed = api.get("/crm/v4/objects/tickets/1107/associations/notes").json()["results"]
    ticket_to_note = {"category": "HUBSPOT_DEFINED", "typeId": 227, "label": None}
    assert {"toObjectId": int(note_id), "associationTypes": [ticket_to_note]} in listed
    ticket = api.get(f"{TICKETS}/1107", params={"associations": "notes"}).json()
    assert {"id": note_id, "type": "ticket_to_note"} in ticket["associations"]["notes"]["results"]
    found = search(api, "notes", filterGroups=by_key("n-1"), properties=["hs_note_body"]).json()
    assert found["total"] == 1
    assert found["results"][0]["properties"] == {"hs_note_body": "Internal <b>note</b>"}
    again = api.post("/crm/v3/objects/notes", json=note("Twice", 1107, uwf_key="n-1"))
    assert again.status_code == 409  # uwf_key is unique
    missing = api.post("/crm/v3/objects/notes", json=note("Orphan", 999999))
    assert missing.status_code == 400


def test_lenient_note_timestamp_switch(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(note_timestamp_required=False)
    untimed = note("Filled in", 1108)
    del untimed["properties"]["hs_timestamp"]
    created = api.post("/crm/v3/objects/notes", json=untimed)
    assert created.status_code == 201
    assert created.json()["properties"]["hs_timestamp"].endswith("Z")


# --------------------------------------------------------------------------- owners, properties


@pytest.mark.parametrize("email", ["bob@acme.test", "BOB@acme.test"])
def test_owner_lookup_by_email(api: httpx.Client, email: str) -> None:
    [owner] = api.get("/crm/v3/owners", params={"email": email}).json()["results"]
    assert owner["id"] == str(BOB)
    assert (owner["firstName"], owner["lastName"], owner["type"]) == ("Bob", "Agent", "PERSON")
    assert api.get(f"/crm/v3/owners/{BOB}").json()["email"] == "bob@acme.test"
    by_user = api.get(f"/crm/v3/owners/{owner['userId']}", params={"idProperty": "userId"})
    assert by_user.json()["id"] == str(BOB)


def test_archived_owners_are_listed_separately(api: httpx.Client) -> None:
    active = [o["id"] for o in api.get("/crm/v3/owners/").json()["results"]]
    assert active == [str(i) for i in (ADMIN, ALICE, BOB, CAROL)]
    archived = api.get("/crm/v3/owners", params={"archived": "true"}).json()["results"]
    assert [o["email"] for o in archived] == ["dan@acme.test"]


def test_ticket_properties_describe_options_and_unique_key(api: httpx.Client) -> None:
    props = {p["name"]: p for p in api.get("/crm/v3/properties/tickets").json()["results"]}
    priority = props["hs_ticket_priority"]
    assert (priority["type"], priority["fieldType"]) == ("enumeration", "select")
    assert [o["value"] for o in priority["options"]] == ["LOW", "MEDIUM", "HIGH", "URGENT"]
    assert props["hs_pipeline_stage"]["options"][0]["label"] == "New"
    assert props["uwf_key"]["hasUniqueValue"] is True
    assert "hubspotDefined" not in props["uwf_key"]
    assert props["createdate"]["modificationMetadata"]["readOnlyValue"] is True
    assert "hs_timestamp" in {
        p["name"] for p in api.get("/crm/v3/properties/notes").json()["results"]
    }


# --------------------------------------------------------------------------- pagination


def test_list_pagination_visits_every_ticket_once(
    api: httpx.Client, sandbox: RunningSandbox
) -> None:
    url: str | None = f"{TICKETS}?limit=7&properties=subject"
    ids: list[int] = []
    while url:
        page = api.get(url).json()
        ids += [int(t["id"]) for t in page["results"]]
        assert all(set(t["properties"]) == {"subject"} for t in page["results"])
        url = page.get("paging", {}).get("next", {}).get("link")
        assert url is None or url.startswith(f"{sandbox.url}{TICKETS}?")
    assert ids[:60] == list(range(1101, 1161))
    assert len(ids) == len(set(ids))


def test_search_pages_follow_after_to_the_end(api: httpx.Client) -> None:
    stages = {"propertyName": "hs_pipeline_stage", "operator": "IN", "values": ["2", "3"]}
    seeded = {"propertyName": "createdate", "operator": "LT", "value": "1704326400000"}
    groups = [{"filters": [stages, seeded]}]
    after: str | None = "0"
    ids: list[str] = []
    totals = set()
    while after is not None:
        body = {"filterGroups": groups, "limit": 4, "after": after,
                "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}]}  # fmt: skip
        response = search(api, "tickets", **body)
        if response.status_code == 429:  # 5 searches per second: pace like a real client
            time.sleep(float(response.headers["Retry-After"]))
            continue
        page = response.json()
        totals.add(page["total"])
        ids += [t["id"] for t in page["results"]]
        after = page.get("paging", {}).get("next", {}).get("after")
    # Seeded tickets (1101–1160, created hourly from 2024-01-01) in stages 2 and 3 (id % 4 is
    # 1 or 2); tickets created by other tests are newer than the createdate bound.
    expected = [str(i) for i in range(1160, 1100, -1) if i % 4 in (1, 2)]
    assert ids == expected
    assert totals == {len(expected)}
    wildcard = {"propertyName": "subject", "operator": "CONTAINS_TOKEN", "value": "print*"}
    token = search(api, "tickets", filterGroups=[{"filters": [wildcard]}]).json()
    assert token["total"] > 0
    assert all(t["properties"]["subject"].startswith("Printer") for t in token["results"])


# --------------------------------------------------------------------------- limits


def test_ten_secondly_rolling_limit(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(rate_limit_per_minute=3)  # HubSpot's window: the limit is per 10 s
    remaining = [
        int(api.get(f"{TICKETS}/1109").headers["x-hubspot-ratelimit-remaining"]) for _ in range(3)
    ]
    assert remaining == [2, 1, 0]
    limited = api.get(f"{TICKETS}/1109")
    assert limited.status_code == 429
    body = limited.json()
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert "category" not in body
    assert 1 <= int(limited.headers["Retry-After"]) <= 10
    assert limited.headers["x-hubspot-ratelimit-max"] == "3"


def test_search_limit_per_token_per_second(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(search_limit=2)
    responses = [search(api, "tickets", limit=1) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json()["policyName"] == "SECONDLY"
    assert responses[2].headers["Retry-After"] == "1"
    sandbox.control(search_limit=None)
    assert search(api, "tickets", limit=1).status_code == 200


def test_daily_limit_of_private_apps(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(daily_limit=2)
    responses = [api.get(f"{TICKETS}/1110") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1].headers["x-hubspot-ratelimit-daily-remaining"] == "0"
    assert responses[2].json()["policyName"] == "DAILY"
    with bearer(sandbox, refreshed(sandbox)["access_token"]) as client:
        assert client.get(f"{TICKETS}/1110").status_code == 200  # OAuth has no daily limit


# --------------------------------------------------------------------------- faults


def test_injected_503_happens_before_the_write(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(error_rates={"503": 1.0})
    response = api.patch(f"{TICKETS}/1111", json={"properties": {"hs_ticket_priority": "URGENT"}})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    sandbox.reset()
    assert api.get(f"{TICKETS}/1111").json()["properties"]["hs_ticket_priority"] != "URGENT"


def test_drop_after_write_commits_then_cuts_the_connection(
    sandbox: RunningSandbox, api: httpx.Client
) -> None:
    sandbox.control(drop_after_write_rate=1.0)
    with pytest.raises(httpx.TransportError):
        api.patch(f"{TICKETS}/1112", json={"properties": {"hs_ticket_priority": "HIGH"}})
    with pytest.raises(httpx.TransportError):
        api.post("/crm/v3/objects/notes", json=note("Lost reply", 1112, uwf_key="drop-1"))
    assert api.get(f"{TICKETS}/1112").json()["properties"]["hs_ticket_priority"] == "HIGH"
    assert search(api, "notes", filterGroups=by_key("drop-1")).json()["total"] == 1
    assert sandbox.stats()["dropped_after_write"] == 2


def test_control_validates_hubspot_keys(sandbox: RunningSandbox) -> None:
    for bad in ({"token_ttl": 5}, {"token_ttl_seconds": -1}, {"daily_limit": 0},
                {"note_timestamp_required": "no"}):  # fmt: skip
        response = httpx.post(f"{sandbox.url}/_control", json=bad)
        assert response.status_code == 400
        assert response.json()["key"] == next(iter(bad))
    settings = sandbox.control(token_ttl_seconds=60, daily_limit=None)["settings"]
    assert (settings["token_ttl_seconds"], settings["daily_limit"]) == (60, None)
    sandbox.reset()
    assert httpx.get(f"{sandbox.url}/_control").json()["settings"]["token_ttl_seconds"] == 1800


# --------------------------------------------------------------------------- lifecycle


def test_records_tokens_and_credentials_survive_a_restart(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "hubspot") as first, bearer(first) as api:
        credentials = first.credentials
        api.patch(f"{TICKETS}/1113", json={"properties": {"hs_ticket_priority": "URGENT"}})
        access = refreshed(first)["access_token"]
    with serve_sandbox(tmp_path, "hubspot") as second, bearer(second) as api:
        assert second.credentials == credentials
        assert api.get(f"{TICKETS}/1113").json()["properties"]["hs_ticket_priority"] == "URGENT"
        page = api.get(TICKETS, params={"limit": 100}).json()
        assert len(page["results"]) == 60  # not seeded twice
        with bearer(second, access) as client:
            assert client.get(f"{TICKETS}/1113").status_code == 200
    assert sandbox_credentials(tmp_path, "hubspot") == credentials


# --------------------------------------------------------------------------- the vendor's client


def test_hubspot_api_client_against_the_sandbox(sandbox: RunningSandbox) -> None:
    """HubSpot's own Python library, aimed at the sandbox, for what UWF does."""
    # The library ships no type information.
    import hubspot  # type: ignore[import-untyped]
    from hubspot.crm.objects.notes import (  # type: ignore[import-untyped]
        AssociationSpec,
        PublicAssociationsForObject,
        PublicObjectId,
    )
    from hubspot.crm.objects.notes import SimplePublicObjectInputForCreate as NoteInput
    from hubspot.crm.tickets import (  # type: ignore[import-untyped]
        ApiException,
        BatchInputSimplePublicObjectBatchInputUpsert,
        PublicObjectSearchRequest,
        SimplePublicObjectBatchInputUpsert,
        SimplePublicObjectInput,
        SimplePublicObjectInputForCreate,
    )

    creds = sandbox.credentials
    token = hubspot.HubSpot(host=sandbox.url).oauth.tokens_api.create(
        grant_type="refresh_token", client_id=creds["client_id"],
        client_secret=creds["client_secret"], refresh_token=creds["refresh_token"],
    )  # fmt: skip
    assert token.expires_in == 1800
    for access in (creds["private_app_token"], token.access_token):
        client = hubspot.HubSpot(access_token=access, host=sandbox.url)
        tickets = client.crm.tickets
        got = tickets.basic_api.get_by_id("1114", properties=["subject", "hubspot_owner_id"])
        assert got.id == "1114"
        assert set(got.properties) == {"subject", "hubspot_owner_id"}
        updated = tickets.basic_api.update(
            "1114", SimplePublicObjectInput(properties={"hs_ticket_priority": "HIGH"})
        )
        assert updated.properties["hs_ticket_priority"] == "HIGH"
        created = tickets.basic_api.create(
            SimplePublicObjectInputForCreate(
                properties={"subject": "SDK", "hs_pipeline_stage": "1"}
            )
        )
        assert created.properties["subject"] == "SDK"
        key = f"sdk:{access[:8]}"
        props = {"subject": "Upsert", "hs_pipeline_stage": "1"}
        one = SimplePublicObjectBatchInputUpsert(id_property="uwf_key", id=key, properties=props)
        upsert = BatchInputSimplePublicObjectBatchInputUpsert(inputs=[one])
        assert [r.new for r in tickets.batch_api.upsert(upsert).results] == [True]
        assert [r.new for r in tickets.batch_api.upsert(upsert).results] == [False]
        by_key_filter = {"propertyName": "uwf_key", "operator": "EQ", "value": key}
        request = PublicObjectSearchRequest(filter_groups=[{"filters": [by_key_filter]}])
        found = tickets.search_api.do_search(request)
        assert found.total == 1
        association = PublicAssociationsForObject(
            to=PublicObjectId(id="1114"),
            types=[
                AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=228)
            ],
        )
        props = {"hs_note_body": "From the SDK", "hs_timestamp": "1717243200000"}
        made = client.crm.objects.notes.basic_api.create(
            NoteInput(properties=props, associations=[association])
        )
        assert made.properties["hs_timestamp"] == "2024-06-01T12:00:00.000Z"
        linked = client.crm.associations.v4.basic_api.get_page("tickets", "1114", "notes")
        assert made.id in {str(r.to_object_id) for r in linked.results}
        [owner] = client.crm.owners.owners_api.get_page(email="alice@acme.test").results
        assert (owner.id, owner.first_name) == (str(ALICE), "Alice")
        assert client.crm.owners.owners_api.get_by_id(int(owner.id)).email == "alice@acme.test"
        with pytest.raises(ApiException) as missing:
            tickets.basic_api.get_by_id("999999")
        assert missing.value.status == 404
