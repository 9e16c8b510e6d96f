"""The Dataverse (Dynamics 365) sandbox over real HTTP: what a Dataverse integration would notice.

There is no standard Python client library for the Dataverse Web API, so the client-library
test drives the sandbox with plain httpx exactly as Microsoft's Web API documentation composes
requests (headers, `Prefer`, following `@odata.nextLink` verbatim, conditional requests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from uwf.sandboxes._dynamics_records import (
    ADMIN_EMAIL,
    ORG_URL,
    QUICKSTART_INCIDENT_ID,
    QUICKSTART_TICKET,
    guid,
)

from .conftest import RunningSandbox, serve_sandbox

API = "/api/data/v9.2"
ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
REPRESENTATION = {"Prefer": "return=representation"}
UPDATE_ONLY = {"If-Match": "*", **REPRESENTATION}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Overrides the Zendesk one of conftest (whose `_fresh_control` resets it per test)."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "dynamics") as running:
        yield running


def client(sandbox: RunningSandbox, token: str | None = None) -> httpx.Client:
    """The Web API as an integration calls it, with the headers Microsoft's docs prescribe."""
    bearer = token or sandbox.credentials["access_token"]
    headers = {**ODATA, "Authorization": f"Bearer {bearer}"}
    return httpx.Client(base_url=sandbox.url + API, headers=headers, timeout=10)


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client(sandbox) as c:
        yield c


def token(sandbox: RunningSandbox, tenant: str | None = None, **form: str) -> httpx.Response:
    """POST to the emulated Entra ID token endpoint, form-urlencoded."""
    creds = sandbox.credentials
    url = f"{sandbox.url}/login/{tenant or creds['tenant_id']}/oauth2/v2.0/token"
    return httpx.post(url, data=form, timeout=10)


def client_credentials(sandbox: RunningSandbox, **override: str) -> httpx.Response:
    creds = sandbox.credentials
    form = {
        "grant_type": "client_credentials",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "scope": creds["scope"],
    }
    return token(sandbox, **{**form, **override})


def odata_error(response: httpx.Response, status: int, code: str) -> str:
    """Assert the Web API's `{"error": {"code", "message"}}`; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["OData-Version"] == "4.0"
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def formatted_request(
    api: httpx.Client,
    method: str,
    path: str,
    body: Any,
    values: dict[str, str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request whose path and string body values name records as `{name}` of ``values``."""
    if isinstance(body, dict):
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
    return api.request(method, path.format(**values), json=body, headers=headers)


def case(n: int) -> str:
    """The GUID of seeded case n (1..60; active unless n is a multiple of 10 or 15)."""
    return guid("incident", n)


def account() -> str:
    return guid("account", 0)


def notes(api: httpx.Client, case_id: str) -> list[dict[str, Any]]:
    listed = api.get(f"/incidents({case_id})/Incident_Annotation")
    value: list[dict[str, Any]] = listed.json()["value"]
    return value


# --------------------------------------------------------------------------- auth


def test_the_dev_token_reads_as_the_application_user(api: httpx.Client) -> None:
    who = api.get("/WhoAmI")
    assert who.status_code == 200
    user = api.get(f"/systemusers({who.json()['UserId']})").json()
    assert user["fullname"] == "# UWF Integration"
    assert user["accessmode"] == 4  # Non-interactive: an application user
    assert who.headers["x-ms-ratelimit-burst-remaining-xrm-requests"].isdigit()
    assert float(who.headers["x-ms-ratelimit-time-remaining-xrm-requests"]) > 1000


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Basic YWRtaW46cGFzcw==", "Bearer {foreign}"],
    ids=["missing", "garbage", "basic", "signed-elsewhere"],
)
def test_requests_without_a_valid_token_get_401_and_a_bearer_challenge(
    sandbox: RunningSandbox, authorization: str | None
) -> None:
    claims = jwt.decode(sandbox.credentials["access_token"], options={"verify_signature": False})
    foreign = jwt.encode(claims, "another-key-that-is-at-least-32-bytes", algorithm="HS256")
    headers = {**ODATA}
    if authorization:
        headers["Authorization"] = authorization.format(foreign=foreign)
    response = httpx.get(f"{sandbox.url}{API}/incidents", headers=headers)
    odata_error(response, 401, "")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=")
    assert f"/login/{sandbox.credentials['tenant_id']}/oauth2/authorize" in challenge
    assert f"resource_id={ORG_URL}/" in challenge


def test_client_credentials_grant_issues_a_token_for_the_org(sandbox: RunningSandbox) -> None:
    response = client_credentials(sandbox)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (body["token_type"], body["expires_in"], body["ext_expires_in"]) == (
        "Bearer",
        3599,
        3599,
    )
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == ORG_URL
    assert claims["tid"] == sandbox.credentials["tenant_id"]
    assert claims["appid"] == sandbox.credentials["client_id"]
    with client(sandbox, body["access_token"]) as api:
        assert api.get("/WhoAmI").status_code == 200
    stats = sandbox.stats()
    assert stats["token_requests"] == 1
    assert stats["token_requests_by_grant_type"] == {"client_credentials": 1}


@pytest.mark.parametrize(
    ("override", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        (
            {"client_id": "00000000-0000-0000-0000-000000000000"},
            400,
            "unauthorized_client",
            700016,
        ),
        ({"grant_type": ""}, 400, "invalid_request", 900144),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"scope": f"{ORG_URL}/user_impersonation"}, 400, "invalid_scope", 1002012),
        ({"scope": "https://other.crm.dynamics.com/.default"}, 400, "invalid_resource", 500011),
    ],
    ids=["bad-secret", "unknown-client", "no-grant", "unsupported-grant", "scope", "resource"],
)
def test_token_errors_carry_entras_body(
    sandbox: RunningSandbox, override: dict[str, str], status: int, error: str, code: int
) -> None:
    response = client_credentials(sandbox, **override)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "\r\nTrace ID: " in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)
    assert sandbox.stats()["token_requests_failed"] == 1


def test_token_endpoint_wants_its_tenant_and_a_form(sandbox: RunningSandbox) -> None:
    unknown = client_credentials(sandbox, tenant="contoso.example")
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]
    creds = sandbox.credentials
    as_json = httpx.post(f"{sandbox.url}{creds['token_path']}", json={"grant_type": "x"})
    assert as_json.status_code == 400
    assert as_json.json()["error_description"].startswith("AADSTS900144: ")


def test_refresh_tokens_rotate_and_the_old_one_stays_valid(sandbox: RunningSandbox) -> None:
    creds = sandbox.credentials
    form = {"grant_type": "refresh_token", "client_id": creds["client_id"]}
    first = token(sandbox, refresh_token=creds["refresh_token"], **form)
    assert first.status_code == 200, first.text
    rotated = first.json()["refresh_token"]
    assert rotated != creds["refresh_token"]
    assert "user_impersonation" in first.json()["scope"]
    with client(sandbox, first.json()["access_token"]) as api:  # a delegated token: the admin
        user_id = api.get("/WhoAmI").json()["UserId"]
        assert api.get(f"/systemusers({user_id})").json()["internalemailaddress"] == ADMIN_EMAIL
    # Entra does not revoke a refresh token when it is used; both keep working.
    assert token(sandbox, refresh_token=rotated, **form).status_code == 200
    assert token(sandbox, refresh_token=creds["refresh_token"], **form).status_code == 200
    bad = token(sandbox, refresh_token="0.Anot-a-token", **form)
    assert bad.status_code == 400
    assert (bad.json()["error"], bad.json()["error_codes"]) == ("invalid_grant", [9002313])
    assert sandbox.stats()["token_requests_by_grant_type"] == {"refresh_token": 4}


def test_access_tokens_expire_after_the_configured_lifetime(sandbox: RunningSandbox) -> None:
    sandbox.control(token_ttl_seconds=1)
    body = client_credentials(sandbox).json()
    assert body["expires_in"] == 1
    with client(sandbox, body["access_token"]) as api:
        assert api.get("/WhoAmI").status_code == 200
        expiry = jwt.decode(body["access_token"], options={"verify_signature": False})["exp"]
        time.sleep(max(0.0, expiry - time.time()) + 1.05)
        message = odata_error(api.get("/WhoAmI"), 401, "")
    assert "expired" in message


# --------------------------------------------------------------------------- cases


def test_the_quickstart_case_is_open_normal_unassigned_and_has_no_notes(api: httpx.Client) -> None:
    found = api.get(
        "/incidents",
        params={
            "$filter": f"ticketnumber eq '{QUICKSTART_TICKET}'",
            "$select": "title,prioritycode,statecode,statuscode,_ownerid_value",
        },
    )
    assert found.status_code == 200
    body = found.json()
    assert body["@odata.context"].endswith(
        "/$metadata#incidents(title,prioritycode,statecode,statuscode,_ownerid_value)"
    )
    [incident] = body["value"]
    assert incident["incidentid"] == QUICKSTART_INCIDENT_ID  # the same GUID on every machine
    assert (incident["prioritycode"], incident["statecode"], incident["statuscode"]) == (2, 0, 1)
    admin = api.get("/systemusers", params={"$filter": f"internalemailaddress eq '{ADMIN_EMAIL}'"})
    assert incident["_ownerid_value"] == admin.json()["value"][0]["systemuserid"]
    assert incident["@odata.etag"].startswith('W/"')
    full = api.get(f"/incidents({incident['incidentid']})")
    assert full.headers["ETag"] == full.json()["@odata.etag"]
    assert full.json()["ticketnumber"] == QUICKSTART_TICKET
    assert notes(api, incident["incidentid"]) == []


def test_update_answers_204_or_the_record_and_reads_back(api: httpx.Client) -> None:
    plain = api.patch(f"/incidents({case(1)})", json={"prioritycode": 3}, headers={"If-Match": "*"})
    assert plain.status_code == 204
    assert plain.content == b""
    shown = api.patch(
        f"/incidents({case(1)})?$select=title,prioritycode",
        headers=UPDATE_ONLY,
        json={"prioritycode": 1, "title": "Printer on fire"},
    )
    assert shown.status_code == 200
    assert shown.headers["Preference-Applied"] == "return=representation"
    assert shown.json()["@odata.context"].endswith("#incidents(title,prioritycode)/$entity")
    assert set(shown.json()) == {
        "@odata.context",
        "@odata.etag",
        "title",
        "prioritycode",
        "incidentid",
    }
    after = api.get(f"/incidents({case(1)})").json()
    assert (after["prioritycode"], after["title"]) == (1, "Printer on fire")


def test_if_match_star_makes_a_patch_update_only(api: httpx.Client) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    odata_error(
        api.patch(f"/incidents({missing})", json={"title": "x"}, headers=UPDATE_ONLY),
        404,
        "0x80040217",
    )
    # Without If-Match a PATCH of an unknown id is an upsert: Dataverse creates the record.
    upsert = api.patch(
        f"/incidents({missing})",
        headers=REPRESENTATION,
        json={
            "title": "Made by upsert",
            "customerid_account@odata.bind": f"/accounts({account()})",
        },
    )
    assert upsert.status_code == 201
    assert upsert.json()["incidentid"] == missing


def test_create_answers_with_odata_entityid_or_201(api: httpx.Client) -> None:
    fields = {"title": "Cannot print", "customerid_account@odata.bind": f"/accounts({account()})"}
    created = api.post("/incidents", json=fields)
    assert created.status_code == 204
    address = created.headers["OData-EntityId"]
    assert address.startswith(str(api.base_url).rstrip("/") + "/incidents(")
    record = httpx.get(address, headers=api.headers).json()
    assert (record["title"], record["statecode"], record["prioritycode"]) == ("Cannot print", 0, 2)
    assert record["ticketnumber"].startswith("CAS-")
    assert record["_customerid_value"] == account()
    shown = api.post("/incidents", json=fields, headers=REPRESENTATION)
    assert shown.status_code == 201
    assert shown.json()["incidentid"] != record["incidentid"]


def test_alternate_key_upsert_creates_once_and_honours_conditions(api: httpx.Client) -> None:
    path = "/incidents(uwf_key='exec-1:open''case')"  # '' is a quote inside the key
    fields = {"title": "Upserted", "customerid_account@odata.bind": f"/accounts({account()})"}
    first = api.patch(path, json=fields, headers=REPRESENTATION)
    assert first.status_code == 201, first.text
    assert first.json()["uwf_key"] == "exec-1:open'case"
    again = api.patch(path, json={**fields, "title": "Upserted again"}, headers=REPRESENTATION)
    assert again.status_code == 200
    assert again.json()["incidentid"] == first.json()["incidentid"]
    found = api.get("/incidents", params={"$filter": "uwf_key eq 'exec-1:open''case'"}).json()
    assert len(found["value"]) == 1
    assert found["value"][0]["title"] == "Upserted again"
    odata_error(api.patch(path, json=fields, headers={"If-None-Match": "*"}), 412, "0x80040237")
    new_key = "/incidents(uwf_key='never-created')"
    odata_error(api.patch(new_key, json=fields, headers=UPDATE_ONLY), 404, "0x80060891")
    plain = api.patch("/incidents(uwf_key='exec-2:open')", json=fields)
    assert plain.status_code == 204
    assert plain.headers["OData-EntityId"].endswith("/incidents(uwf_key='exec-2:open')")


def test_notes_are_appended_to_the_case_and_listed(api: httpx.Client) -> None:
    bind = {"objectid_incident@odata.bind": f"/incidents({case(2)})"}
    before = len(notes(api, case(2)))
    first = api.post("/annotations", json={"subject": "First", "notetext": "one", **bind})
    assert first.status_code == 204
    second = api.post(
        "/annotations",
        headers=REPRESENTATION,
        json={"subject": "Second", "notetext": "two", **bind},
    )
    assert second.status_code == 201
    assert second.json()["_objectid_value"] == case(2)
    assert second.json()["objecttypecode"] == "incident"
    listed = notes(api, case(2))
    assert [n["notetext"] for n in listed[before:]] == ["one", "two"]
    filtered = api.get(
        "/annotations", params={"$filter": f"_objectid_value eq {case(2)} and subject eq 'Second'"}
    )
    assert [n["notetext"] for n in filtered.json()["value"]] == ["two"]


def test_users_are_looked_up_by_email(api: httpx.Client) -> None:
    def lookup(email: str) -> list[dict[str, Any]]:
        quoted = "'" + email.replace("'", "''") + "'"
        params = {
            "$filter": f"internalemailaddress eq {quoted} and isdisabled eq false",
            "$select": "fullname,internalemailaddress",
        }
        response = api.get("/systemusers", params=params)
        assert response.status_code == 200, response.text
        value: list[dict[str, Any]] = response.json()["value"]
        return value

    [bob] = lookup("BOB@acme.test")  # string filters are case-insensitive
    assert bob["fullname"] == "Bob Agent"
    assert bob["systemuserid"] == guid("systemuser", "bob")
    assert lookup("dave@acme.test") == []  # disabled
    assert lookup("o'brien@acme.test") == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "text"),
    [
        (
            "PATCH",
            "/incidents({c})",
            {"prioritycode": 7},
            400,
            "0x8004431a",
            "The value 7 of 'prioritycode' on record of type 'incident' is outside the valid range",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"Title": "x"},
            400,
            "0x0",
            "Invalid property 'Title' was found in entity 'Microsoft.Dynamics.CRM.incident'",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"prioritycode": "1"},
            400,
            "0x0",
            "Cannot convert the literal '1' to the expected type 'Edm.Int32'",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"title": "x" * 201},
            400,
            "0x80044331",
            "exceeded the maximum allowed length of '200'",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"ownerid@odata.bind": "{c}"},
            400,
            "0x80048d19",
            "is not a valid URI of an entity in the set 'systemusers'",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"ownerid@odata.bind": "/systemusers({dave})"},
            400,
            "0x80040225",
            "is disabled",
        ),
        (
            "PATCH",
            "/incidents({c})",
            {"statecode": 1},
            400,
            "0x80040203",
            "use the CloseIncidentRequest message instead",
        ),
        (
            "PATCH",
            "/incidents({resolved})",
            {"title": "x"},
            400,
            "0x80040203",
            "This case has already been resolved",
        ),
        (
            "POST",
            "/incidents",
            {"title": "no customer"},
            400,
            "0x80040203",
            "You should specify a parent contact or account.",
        ),
        (
            "GET",
            "/incidents?$select=Title",
            None,
            400,
            "0x0",
            "Could not find a property named 'Title' on type 'Microsoft.Dynamics.CRM.incident'.",
        ),
        (
            "GET",
            "/incidents?$filter=prioritycode eq '1'",
            None,
            400,
            "0x0",
            "Found operand types 'Edm.Int32' and 'Edm.String' for operator kind 'Equal'.",
        ),
        (
            "GET",
            "/incidents?$filter=title eq 'O'Brien'",
            None,
            400,
            "0x0",
            "There is an unterminated literal at position 18 in 'title eq 'O'Brien''.",
        ),
        (
            "GET",
            "/incidents({missing})",
            None,
            404,
            "0x80040217",
            "incident With Id = {missing} Does Not Exist",
        ),
        ("GET", "/incidents(42)", None, 400, "0x0", "The key in the request URI is not valid"),
        (
            "GET",
            "/Incidents",
            None,
            404,
            "0x8006088a",
            "Resource not found for the segment 'Incidents'.",
        ),
        ("POST", "/WhoAmI", {}, 404, "", "No HTTP resource was found that matches the request URI"),
    ],
    ids=[
        "picklist",
        "unknown-property",
        "wrong-type",
        "too-long",
        "bad-bind",
        "disabled-owner",
        "resolve-by-patch",
        "resolved-read-only",
        "no-customer",
        "bad-select",
        "filter-types",
        "unterminated",
        "not-found",
        "bad-key",
        "unknown-set",
        "wrong-method",
    ],
)
def test_errors_use_the_web_api_body(
    api: httpx.Client, method: str, path: str, body: Any, status: int, code: str, text: str
) -> None:
    values = {
        "c": case(4),
        "resolved": case(20),
        "dave": guid("systemuser", "dave"),
        "missing": "99999999-9999-9999-9999-999999999999",
    }
    response = formatted_request(api, method, path, body, values)
    assert text.format(**values) in odata_error(response, status, code)


def test_unsupported_odata_versions_are_refused(api: httpx.Client) -> None:
    odata_error(api.get("/WhoAmI", headers={"OData-Version": "3.0"}), 400, "0x0")
    odata_error(api.get("/WhoAmI", headers={"OData-MaxVersion": "3.0"}), 400, "0x0")


# --------------------------------------------------------------------------- paging, limits


def test_pages_follow_next_link_to_the_end(api: httpx.Client) -> None:
    total = len(api.get("/incidents", params={"$select": "title"}).json()["value"])
    assert total >= 60
    seen: list[str] = []
    url: str | None = "/incidents?$select=title&$orderby=createdon desc"
    pages = 0
    while url is not None:
        page = api.get(url, headers={"Prefer": "odata.maxpagesize=7"})
        assert page.status_code == 200
        assert page.headers["Preference-Applied"] == "odata.maxpagesize=7"
        body = page.json()
        seen += [row["incidentid"] for row in body["value"]]
        assert len(body["value"]) <= 7
        url = body.get("@odata.nextLink")
        assert url is None or "$skiptoken=" in httpx.URL(url).query.decode().replace("%24", "$")
        pages += 1
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 7)
    top = api.get("/incidents", params={"$top": "5", "$select": "title"}).json()
    assert len(top["value"]) == 5
    assert "@odata.nextLink" not in top


def test_service_protection_limit_answers_429_with_retry_after(
    sandbox: RunningSandbox, api: httpx.Client
) -> None:
    sandbox.control(service_protection_requests=3)
    remaining = [
        api.get("/WhoAmI").headers["x-ms-ratelimit-burst-remaining-xrm-requests"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    throttled = api.get("/WhoAmI")
    message = odata_error(throttled, 429, "0x80072322")
    assert message == "Number of requests exceeded the limit of 3 over time window of 300 seconds."
    assert 1 <= int(throttled.headers["Retry-After"]) <= 300


def test_combined_execution_time_and_concurrency_are_limited_too(
    sandbox: RunningSandbox, api: httpx.Client
) -> None:
    sandbox.control(execution_time_limit_ms=1)  # the first request uses up the budget
    first = api.get("/incidents", params={"$top": "50"})
    assert first.status_code == 200
    assert first.headers["x-ms-ratelimit-time-remaining-xrm-requests"] == "0.00"
    message = odata_error(api.get("/WhoAmI"), 429, "0x80072321")
    assert message.startswith("Combined execution time of incoming requests exceeded limit of 1 ")
    sandbox.reset()
    sandbox.control(concurrent_request_limit=1)
    assert api.get("/WhoAmI").status_code == 200  # one at a time is fine
    refused = httpx.post(f"{sandbox.url}/_control", json={"concurrent_request_limit": 0})
    assert refused.status_code == 400
    assert refused.json()["key"] == "concurrent_request_limit"


def test_injected_faults_and_the_account_window(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.control(error_rates={"503": 1.0})
    unavailable = api.get("/WhoAmI")
    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "1")
    sandbox.control(error_rates={"429": 1.0})
    assert odata_error(api.get("/WhoAmI"), 429, "0x80072322")
    assert sandbox.stats()["injected"] == {"429": 1, "503": 1}
    sandbox.reset()  # a fresh account window, now of one request a minute
    sandbox.control(rate_limit_per_minute=1)
    assert api.get("/WhoAmI").status_code == 200
    limited = api.get("/WhoAmI")
    odata_error(limited, 429, "0x80072322")
    assert int(limited.headers["Retry-After"]) >= 1


def test_a_note_whose_response_is_dropped_is_still_written(
    sandbox: RunningSandbox, api: httpx.Client
) -> None:
    sandbox.control(drop_after_write_rate=1.0)
    bind = {"objectid_incident@odata.bind": f"/incidents({case(5)})"}
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(
            "/annotations",
            headers=REPRESENTATION,
            json={"subject": "Lost", "notetext": "lost response", **bind},
        )
    sandbox.reset()
    assert [n["notetext"] for n in notes(api, case(5))].count("lost response") == 1
    assert sandbox.stats()["dropped_after_write"] == 0  # reset cleared the stats


def test_field_metadata_describes_the_case_table(api: httpx.Client) -> None:
    attributes = api.get(
        "/EntityDefinitions(LogicalName='incident')/Attributes",
        params={"$select": "LogicalName,AttributeType"},
    ).json()["value"]
    types = {a["LogicalName"]: a["AttributeType"] for a in attributes}
    assert {
        "title": "String",
        "prioritycode": "Picklist",
        "ownerid": "Owner",
        "uwf_key": "String",
        "statecode": "State",
    }.items() <= types.items()
    priority = api.get(
        "/EntityDefinitions(LogicalName='incident')/Attributes(LogicalName='prioritycode')"
        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet"},
    ).json()
    assert priority["@odata.type"] == "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    options = {
        o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"]
        for o in priority["OptionSet"]["Options"]
    }
    assert options == {1: "High", 2: "Normal", 3: "Low"}
    definition = api.get("/EntityDefinitions(LogicalName='incident')").json()
    assert (definition["EntitySetName"], definition["PrimaryIdAttribute"]) == (
        "incidents",
        "incidentid",
    )


def test_records_and_credentials_survive_a_restart(sandbox: RunningSandbox) -> None:
    with client(sandbox) as api:
        api.patch(f"/incidents({case(7)})", json={"title": "Kept"}, headers={"If-Match": "*"})
    with serve_sandbox(sandbox.home, "dynamics") as again:
        assert again.credentials == sandbox.credentials
        with client(again) as api:  # the long-lived token is still signed with the same key
            assert api.get(f"/incidents({case(7)})").json()["title"] == "Kept"


# --------------------------------------------------------------------------- an OData client


def test_an_odata_client_following_microsofts_docs(sandbox: RunningSandbox) -> None:
    """Token by client credentials, then create, conditional reads, update and paging."""
    creds = sandbox.credentials
    form = {
        "grant_type": "client_credentials",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "scope": creds["scope"],
    }
    access = httpx.post(sandbox.url + creds["token_path"], data=form).json()["access_token"]
    # "All HTTP requests should include at least the following headers" (Compose HTTP requests).
    headers = {
        "Authorization": f"Bearer {access}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "If-None-Match": "null",
    }
    with httpx.Client(base_url=f"{sandbox.url}{API}/", headers=headers, timeout=10) as web:
        created = web.post(
            "incidents?$select=title,ticketnumber",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Prefer": "return=representation",
            },
            json={
                "title": "Sample case",
                "customerid_account@odata.bind": f"accounts({account()})",
            },
        )
        assert created.status_code == 201, created.text
        case_id, tag = created.json()["incidentid"], created.json()["@odata.etag"]
        assert web.get(f"incidents({case_id})", headers={"If-None-Match": tag}).status_code == 304
        stale = web.patch(f"incidents({case_id})", headers={"If-Match": 'W/"1"'}, json={})
        odata_error(stale, 412, "0x80060882")
        updated = web.patch(
            f"incidents({case_id})",
            headers={"If-Match": tag},
            json={"description": "Updated by an OData client"},
        )
        assert updated.status_code == 204
        assert web.get(f"incidents({case_id})", headers={"If-None-Match": tag}).status_code == 200
        users, link = [], "systemusers?$select=fullname"
        while link:
            page = web.get(
                link, headers={"Prefer": 'odata.include-annotations="*",odata.maxpagesize=2'}
            ).json()
            users += page["value"]
            link = page.get("@odata.nextLink")  # used verbatim, as the docs require
        assert len(users) == 6


# --------------------------------------------------------------------------- accounts, contacts


def test_seeded_accounts_and_contacts_read_back(api: httpx.Client) -> None:
    fabrikam = api.get(
        f"/accounts({guid('account', 1)})",
        params={
            "$select": "name,accountnumber,telephone1,websiteurl,industrycode,address1_country"
        },
    ).json()
    assert (fabrikam["name"], fabrikam["accountnumber"], fabrikam["industrycode"]) == (
        "Fabrikam",
        "ACC-1002",
        12,
    )
    assert (fabrikam["websiteurl"], fabrikam["address1_country"]) == (
        "https://fabrikam.example",
        "United States",
    )
    found = api.get(
        "/contacts",
        params={
            "$filter": "emailaddress1 eq 'YVONNE.MCKAY@contoso.test' and statecode eq 0",
            "$select": "fullname,jobtitle,mobilephone,_parentcustomerid_value",
        },
    ).json()["value"]
    assert [(c["contactid"], c["fullname"], c["jobtitle"]) for c in found] == [
        (guid("contact", 0), "Yvonne McKay", "Purchasing Manager")
    ]
    assert found[0]["_parentcustomerid_value"] == guid("account", 0)


def test_an_account_upsert_by_alternate_key_creates_once(api: httpx.Client) -> None:
    path = "/accounts(uwf_key='exec-9:account')"
    fields = {"name": "Upsert Ltd", "industrycode": 7, "telephone1": "+44 20 7946 0000"}
    first = api.patch(path, json=fields, headers=REPRESENTATION)
    assert first.status_code == 201, first.text
    assert (first.json()["uwf_key"], first.json()["statecode"], first.json()["statuscode"]) == (
        "exec-9:account",
        0,
        1,
    )
    again = api.patch(path, json={**fields, "name": "Upsert Ltd."}, headers=REPRESENTATION)
    assert again.status_code == 200
    assert again.json()["accountid"] == first.json()["accountid"]
    listed = api.get("/accounts", params={"$filter": "uwf_key eq 'exec-9:account'"}).json()
    assert [a["name"] for a in listed["value"]] == ["Upsert Ltd."]
    odata_error(api.patch(path, json=fields, headers={"If-None-Match": "*"}), 412, "0x80040237")
    message = odata_error(
        api.patch("/accounts(uwf_key='never')", json=fields, headers=UPDATE_ONLY),
        404,
        "0x80060891",
    )
    assert message == "A record with the specified key values does not exist in account entity"
    # The key is unique per table: another account may not take it by POST.
    taken = api.post("/accounts", json={"name": "Copycat", "uwf_key": "exec-9:account"})
    assert "The entity key uwf_key requires" in odata_error(taken, 412, "0x80060892")


def test_a_contact_gets_its_full_name_and_its_company(api: httpx.Client) -> None:
    created = api.post(
        "/contacts",
        headers=REPRESENTATION,
        json={
            "firstname": "Dana",
            "lastname": "Scully",
            "emailaddress1": "dana.scully@fbi.test",
            "parentcustomerid_account@odata.bind": f"/accounts({guid('account', 3)})",
            "fullname": "ignored, as Dataverse ignores read-only columns",
        },
    )
    assert created.status_code == 201, created.text
    contact = created.json()
    assert (contact["fullname"], contact["_parentcustomerid_value"]) == (
        "Dana Scully",
        guid("account", 3),
    )
    renamed = api.patch(
        f"/contacts({contact['contactid']})",
        headers=UPDATE_ONLY,
        json={"lastname": "Mulder", "jobtitle": "Special Agent"},
    )
    assert (renamed.json()["fullname"], renamed.json()["jobtitle"]) == (
        "Dana Mulder",
        "Special Agent",
    )
    inactive = api.patch(f"/contacts({contact['contactid']})", headers=UPDATE_ONLY,
                         json={"statecode": 1})  # fmt: skip
    assert (inactive.json()["statecode"], inactive.json()["statuscode"]) == (1, 2)


def test_business_required_columns_are_not_enforced_by_the_web_api(api: httpx.Client) -> None:
    """Dataverse leaves ApplicationRequired (an account's name) to its forms."""
    created = api.post("/accounts", headers=REPRESENTATION, json={"telephone1": "+1 555 0100"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] is None
    lastname = api.get(
        "/EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='lastname')"
    ).json()
    assert lastname["RequiredLevel"]["Value"] == "ApplicationRequired"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "text"),
    [
        (
            "POST",
            "/accounts",
            {"name": "x", "industrycode": 99},
            400,
            "0x8004431a",
            "The value 99 of 'industrycode' on record of type 'account' is outside the valid "
            "range. Accepted Values: 1,2,3,",
        ),
        (
            "POST",
            "/accounts",
            {"name": "x" * 161},
            400,
            "0x80044331",
            "The length of the 'name' attribute of the 'account' entity exceeded the maximum "
            "allowed length of '160'.",
        ),
        (
            "POST",
            "/contacts",
            {"EMailAddress1": "a@b.test"},
            400,
            "0x0",
            "Invalid property 'EMailAddress1' was found in entity 'Microsoft.Dynamics.CRM.contact'",
        ),
        (
            "POST",
            "/contacts",
            {"lastname": "x", "parentcustomerid_account@odata.bind": "/systemusers({admin})"},
            400,
            "0x80048d19",
            "is not a valid URI of an entity in the set 'accounts'",
        ),
        (
            "POST",
            "/contacts",
            {"lastname": "x", "parentcustomerid_account@odata.bind": "/accounts({missing})"},
            404,
            "0x80040217",
            "account With Id = {missing} Does Not Exist",
        ),
        (
            "POST",
            "/accounts",
            {"accountid": "{fabrikam}", "name": "Fabrikam again"},
            412,
            "0x80040237",
            "A record with matching key values already exists.",
        ),
        (
            "PATCH",
            "/accounts({fabrikam})",
            {"statuscode": 2},
            400,
            "0x80040203",
            "2 is not a valid status code for state code AccountState.Active.",
        ),
        (
            "GET",
            "/accounts({missing})",
            None,
            404,
            "0x80040217",
            "account With Id = {missing} Does Not Exist",
        ),
        (
            "PATCH",
            "/contacts({missing})",
            {"jobtitle": "x"},
            404,
            "0x80040217",
            "contact With Id = {missing} Does Not Exist",
        ),
        (
            "GET",
            "/contacts?$filter=emailaddress eq 'a@b.test'",
            None,
            400,
            "0x0",
            "Could not find a property named 'emailaddress' on type "
            "'Microsoft.Dynamics.CRM.contact'.",
        ),
    ],
    ids=[
        "industry-choice",
        "name-too-long",
        "unknown-property",
        "bind-to-wrong-set",
        "bind-to-missing-account",
        "duplicate-id",
        "status-not-of-state",
        "account-not-found",
        "contact-not-found",
        "bad-filter",
    ],
)
def test_account_and_contact_errors_use_the_web_api_body(
    api: httpx.Client, method: str, path: str, body: Any, status: int, code: str, text: str
) -> None:
    values = {
        "admin": guid("systemuser", "admin"),
        "fabrikam": guid("account", 1),
        "missing": "99999999-9999-9999-9999-999999999999",
    }
    headers = UPDATE_ONLY if method == "PATCH" else {}
    response = formatted_request(api, method, path, body, values, headers)
    assert text.format(**values) in odata_error(response, status, code)


@pytest.mark.parametrize("path", ["/accounts", f"/contacts({guid('contact', 0)})"])
def test_accounts_and_contacts_need_a_token(sandbox: RunningSandbox, path: str) -> None:
    response = httpx.get(f"{sandbox.url}{API}{path}", headers=ODATA)
    odata_error(response, 401, "")
    assert response.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")


def test_contacts_page_by_next_link(api: httpx.Client) -> None:
    query = "/contacts?$select=fullname&$orderby=createdon asc"
    total = api.get(query).json()["value"]
    seen: list[dict[str, Any]] = []
    url: str | None = query
    while url is not None:
        page = api.get(url, headers={"Prefer": "odata.maxpagesize=2"}).json()
        assert len(page["value"]) <= 2
        seen += page["value"]
        url = page.get("@odata.nextLink")
    assert [c["contactid"] for c in seen] == [c["contactid"] for c in total]
    assert [c["fullname"] for c in seen[:2]] == ["Yvonne McKay", "Paul Cannon"]


def test_a_cases_notes_list_newest_first(api: httpx.Client) -> None:
    bind = {"objectid_incident@odata.bind": f"/incidents({case(6)})"}
    for text in ("older", "newer"):
        api.post("/annotations", json={"subject": "Ordered", "notetext": text, **bind})
    listed = api.get(
        f"/incidents({case(6)})/Incident_Annotation",
        params={"$orderby": "createdon desc", "$select": "notetext,createdon"},
    ).json()["value"]
    # createdon has whole seconds, as in Dataverse, so the two new notes may tie; the seeded
    # note (case 6 is a multiple of 3, its note dated 2024) comes after both.
    texts = [n["notetext"] for n in listed]
    assert sorted(texts[:2]) == ["newer", "older"]
    assert texts[2:] == ["Called the customer and collected the details."]
    odata_error(api.get(f"/incidents({'9' * 8}-9999-9999-9999-{'9' * 12})/Incident_Annotation"),
                404, "0x80040217")  # fmt: skip


def test_field_metadata_describes_accounts_and_contacts(api: httpx.Client) -> None:
    industry = api.get(
        "/EntityDefinitions(LogicalName='account')/Attributes"
        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet"},
    ).json()["value"]
    [code] = [a for a in industry if a["LogicalName"] == "industrycode"]
    options = {
        o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in code["OptionSet"]["Options"]
    }
    assert (len(options), options[7], options[33]) == (33, "Consulting", "Wholesale")
    attributes = api.get(
        "/EntityDefinitions(LogicalName='contact')/Attributes",
        params={"$select": "LogicalName,AttributeType,IsValidForCreate,IsValidForUpdate"},
    ).json()["value"]
    by_name = {a["LogicalName"]: a for a in attributes}
    assert by_name["parentcustomerid"]["AttributeType"] == "Customer"
    assert (by_name["fullname"]["IsValidForCreate"], by_name["fullname"]["IsValidForUpdate"]) == (
        False,
        False,
    )
    assert by_name["emailaddress1"]["IsValidForCreate"] is True


def test_duplicate_detection_refuses_only_when_asked(api: httpx.Client) -> None:
    """The default rules: accounts with the same name, contacts with the same e-mail address."""
    detect = {"MSCRM.SuppressDuplicateDetection": "false"}
    same_name = api.post("/accounts", json={"name": "northwind"}, headers=detect)
    message = odata_error(same_name, 500, "0x80040333")
    assert message == (
        "A record was not created or updated because a duplicate of the current record "
        "already exists."
    )
    email = {"lastname": "Twin", "emailaddress1": "Rene.Valdes@fabrikam.test"}
    odata_error(api.post("/contacts", json=email, headers=detect), 500, "0x80040333")
    twin = api.post("/contacts", json=email, headers=REPRESENTATION)  # no header: allowed
    assert twin.status_code == 201
    moved = api.patch(
        f"/contacts({twin.json()['contactid']})",
        json={"emailaddress1": "sidney.higa@northwind.test"},
        headers={**detect, **UPDATE_ONLY},
    )
    odata_error(moved, 500, "0x80040333")
    # A record is no duplicate of itself: an update that keeps Fabrikam's name passes.
    same = api.patch(f"/accounts({guid('account', 1)})", json={"name": "Fabrikam"},
                     headers={**detect, **UPDATE_ONLY})  # fmt: skip
    assert same.status_code == 200
