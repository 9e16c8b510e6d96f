"""The Salesforce sandbox over real HTTP: what a Salesforce integration would notice."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceMalformedRequest
from simple_salesforce.format import format_soql

from uwf.sandboxes import sandbox_credentials
from uwf.sandboxes.salesforce import QUICKSTART_CASE_ID, QUICKSTART_CASE_NUMBER

from .conftest import RunningSandbox, serve_sandbox

API = "/services/data/v59.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


# One keep-alive client for the whole module: building an httpx client costs ~80 ms (its TLS
# context), more than most of these tests.
HTTP = httpx.Client(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Overrides conftest's Zendesk sandbox, which its `_fresh_control` would reset."""
    with serve_sandbox(tmp_path_factory.mktemp("home"), "salesforce") as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_control(sandbox: RunningSandbox) -> Iterator[None]:
    # Limits, faults and stats are per test; records persist, so tests pick their own cases.
    HTTP.delete(f"{sandbox.url}/_control").raise_for_status()
    yield
    HTTP.delete(f"{sandbox.url}/_control").raise_for_status()


def control(sandbox: RunningSandbox, **settings: Any) -> None:
    HTTP.post(f"{sandbox.url}/_control", json=settings).raise_for_status()


def stats(sandbox: RunningSandbox) -> dict[str, Any]:
    result: dict[str, Any] = HTTP.get(f"{sandbox.url}/_control").json()["stats"]
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(sandbox: RunningSandbox) -> httpx.Client:
    """The REST API as an integration calls it: ``{instance_url}/services/data/v59.0``."""
    headers = bearer(sandbox.credentials["access_token"])
    return httpx.Client(base_url=sandbox.url + API, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def api(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client(sandbox) as c:
        yield c


def token(sandbox: RunningSandbox, **form: str) -> httpx.Response:
    return HTTP.post(f"{sandbox.url}/services/oauth2/token", data=form)


def assertion(sandbox: RunningSandbox, key: str | None = None, **claims: Any) -> str:
    creds = sandbox.credentials
    payload = {
        "iss": creds["client_id"],
        "sub": creds["username"],
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
        **claims,
    }
    return jwt.encode(payload, key or creds["private_key_pem"], algorithm="RS256")


def error(status: int, code: str, response: httpx.Response) -> dict[str, Any]:
    """Assert Salesforce's error array with one entry of ``code``; returns that entry."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, list)
    assert body[0]["errorCode"] == code
    entry: dict[str, Any] = body[0]
    return entry


def case_id(api: httpx.Client, number: str) -> str:
    return str(api.get(f"/sobjects/Case/CaseNumber/{number}").json()["Id"])


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer 00Dxx0000000000!bogus"}, {"Authorization": "Basic eDp5"}],
)
def test_missing_or_unknown_session_is_401(
    sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    response = HTTP.get(f"{sandbox.url}{API}/sobjects/Case/{QUICKSTART_CASE_ID}", headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID_SESSION


def test_versions_list_needs_no_session(sandbox: RunningSandbox) -> None:
    versions = HTTP.get(f"{sandbox.url}/services/data/").json()
    assert {"label": "Winter '24", "url": API, "version": "59.0"} in versions


@pytest.mark.parametrize("grant", ["password", "client_credentials", "client_basic", "jwt"])
def test_token_grants_return_a_working_session(sandbox: RunningSandbox, grant: str) -> None:
    creds = sandbox.credentials
    app = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    if grant == "password":
        secret = creds["password"] + creds["security_token"]
        response = token(
            sandbox, grant_type="password", username=creds["username"], password=secret, **app
        )
    elif grant == "client_credentials":
        response = token(sandbox, grant_type="client_credentials", **app)
    elif grant == "client_basic":  # the client may authenticate with HTTP Basic instead
        basic = httpx.BasicAuth(creds["client_id"], creds["client_secret"])
        url = f"{sandbox.url}/services/oauth2/token"
        response = HTTP.post(url, data={"grant_type": "client_credentials"}, auth=basic)
    else:
        response = token(sandbox, grant_type=JWT_GRANT, assertion=assertion(sandbox))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sandbox.url
    assert body["id"] == f"{sandbox.url}/id/{creds['org_id']}/{creds['user_id']}"
    assert "refresh_token" not in body  # none of these flows issues one
    # signature = Base64(HMAC-SHA256(client_secret, id + issued_at)), as Salesforce signs it.
    mac = hmac.new(
        creds["client_secret"].encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    )
    assert body["signature"] == base64.b64encode(mac.digest()).decode()
    case = HTTP.get(
        f"{sandbox.url}{API}/sobjects/Case/{QUICKSTART_CASE_ID}",
        headers=bearer(body["access_token"]),
    )
    assert case.status_code == 200
    identity = HTTP.get(body["id"], headers=bearer(body["access_token"]))
    assert identity.json()["username"] == creds["username"]


def _other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


@pytest.mark.parametrize(
    ("case", "code", "description"),
    [
        ("wrong password", "invalid_grant", "authentication failure"),
        ("unknown client", "invalid_client_id", "client identifier invalid"),
        ("wrong secret", "invalid_client", "invalid client credentials"),
        ("unknown grant", "unsupported_grant_type", "grant type not supported"),
        ("foreign key", "invalid_grant", "invalid assertion"),
        ("expired assertion", "invalid_grant", "invalid assertion"),
        ("wrong audience", "invalid_grant", "audience is invalid"),
        ("unknown user", "invalid_grant", "user hasn't approved this consumer"),
        ("inactive user", "invalid_grant", "user hasn't approved this consumer"),
        ("used refresh token", "invalid_grant", "expired access/refresh token"),
    ],
)
def test_token_endpoint_errors(
    sandbox: RunningSandbox, case: str, code: str, description: str
) -> None:
    creds = sandbox.credentials
    app = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    jwt_forms: dict[str, dict[str, Any]] = {
        "foreign key": {"key": _other_key()},
        "expired assertion": {"exp": int(time.time()) - 60},
        "wrong audience": {"aud": "https://evil.example"},
        "unknown user": {"sub": "nobody@globex.sandbox"},
        "inactive user": {"sub": "dave@globex.sandbox"},
    }
    if case in jwt_forms:
        form = {"grant_type": JWT_GRANT, "assertion": assertion(sandbox, **jwt_forms[case])}
    elif case == "used refresh token":
        form = {"grant_type": "refresh_token", "refresh_token": "5Aep861bogus", **app}
    else:
        form = {"grant_type": "password", "username": creds["username"], "password": "nope", **app}
        form |= {
            "unknown client": {"client_id": "3MVG9nope"},
            "wrong secret": {"client_secret": "nope"},
            "unknown grant": {"grant_type": "authorization_code"},
        }.get(case, {})
    response = token(sandbox, **form)
    assert response.status_code == 400
    assert response.json() == {"error": code, "error_description": description}


def test_access_token_expires_after_the_configured_ttl(sandbox: RunningSandbox) -> None:
    control(sandbox, token_ttl_seconds=1)
    creds = sandbox.credentials
    body = token(
        sandbox,
        grant_type="client_credentials",
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
    ).json()
    limits = f"{sandbox.url}{API}/limits"
    assert HTTP.get(limits, headers=bearer(body["access_token"])).status_code == 200
    time.sleep(1.1)
    expired = HTTP.get(limits, headers=bearer(body["access_token"]))
    assert expired.status_code == 401
    assert expired.json() == INVALID_SESSION
    dev = HTTP.get(limits, headers=bearer(sandbox.credentials["access_token"]))
    assert dev.status_code == 200  # the dev access token never expires


def test_refresh_token_rotates_and_requests_are_counted(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "salesforce") as fresh:
        creds = fresh.credentials
        form = {"grant_type": "refresh_token", "client_id": creds["client_id"]}
        first = token(fresh, **form, refresh_token=creds["refresh_token"]).json()
        assert first["refresh_token"] != creds["refresh_token"]
        reused = token(fresh, **form, refresh_token=creds["refresh_token"])
        assert reused.json()["error"] == "invalid_grant"  # rotation invalidated the old one
        second = token(fresh, **form, refresh_token=first["refresh_token"]).json()
        limits = f"{fresh.url}{API}/limits"
        assert HTTP.get(limits, headers=bearer(second["access_token"])).status_code == 200
        # Revoking a refresh token revokes the access tokens issued with it.
        revoke = f"{fresh.url}/services/oauth2/revoke"
        assert HTTP.post(revoke, data={"token": second["refresh_token"]}).status_code == 200
        assert HTTP.get(limits, headers=bearer(second["access_token"])).status_code == 401
        token(fresh, grant_type=JWT_GRANT, assertion=assertion(fresh))
        counted = stats(fresh)
    assert counted["token_requests"] == 4
    assert counted["token_requests_by_grant_type"] == {JWT_GRANT: 1, "refresh_token": 3}


# --------------------------------------------------------------------------- cases


def test_quickstart_case(api: httpx.Client) -> None:
    case = api.get(f"/sobjects/Case/CaseNumber/{QUICKSTART_CASE_NUMBER}").json()
    assert case["attributes"] == {
        "type": "Case",
        "url": f"{API}/sobjects/Case/{QUICKSTART_CASE_ID}",
    }
    assert case["Id"] == QUICKSTART_CASE_ID
    assert (case["Status"], case["Priority"], case["IsClosed"]) == ("New", "Medium", False)
    assert case["OwnerId"].startswith("00G")  # a queue: no agent owns it yet
    assert case["CreatedDate"].endswith(".000+0000")
    # A 15-character id names the same record; ?fields= narrows the answer.
    short = api.get(f"/sobjects/Case/{QUICKSTART_CASE_ID[:15]}", params={"fields": "Subject"})
    assert set(short.json()) == {"attributes", "Subject"}
    soql = format_soql("SELECT Id FROM CaseComment WHERE ParentId = {}", QUICKSTART_CASE_ID)
    assert api.get("/query", params={"q": soql}).json()["totalSize"] == 0


def test_update_is_read_back(api: httpx.Client) -> None:
    cid = case_id(api, "00001010")
    before = api.get(f"/sobjects/Case/{cid}").json()
    response = api.patch(f"/sobjects/Case/{cid}", json={"Status": "Closed", "Priority": "Low"})
    assert (response.status_code, response.content) == (204, b"")
    after = api.get(f"/sobjects/Case/{cid}").json()
    assert (after["Status"], after["Priority"], after["IsClosed"]) == ("Closed", "Low", True)
    assert after["ClosedDate"] is not None
    assert after["LastModifiedDate"] > before["LastModifiedDate"]


def test_create_is_read_back(api: httpx.Client, sandbox: RunningSandbox) -> None:
    response = api.post("/sobjects/Case/", json={"Subject": "Boiler leaks", "Origin": "Phone"})
    assert response.status_code == 201
    created = response.json()
    assert created["success"] is True
    assert created["errors"] == []
    case = api.get(f"/sobjects/Case/{created['id']}").json()
    assert (case["Subject"], case["Status"], case["Priority"]) == ("Boiler leaks", "New", "Medium")
    assert case["OwnerId"] == sandbox.credentials["user_id"]  # the creator owns it
    assert int(case["CaseNumber"]) > 1250


def test_upsert_by_external_id(api: httpx.Client) -> None:
    path = "/sobjects/Case/UWF_Key__c/exec-1%3Acreate"
    first = api.patch(path, json={"Subject": "Upserted"})
    again = api.patch(path, json={"Subject": "Upserted again"})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert again.status_code == 200
    assert again.json() == {
        "id": first.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    assert api.get(path).json()["Subject"] == "Upserted again"
    # CaseNumber is an idLookup field: it finds the case, but cannot create one.
    existing = api.patch("/sobjects/Case/CaseNumber/00001011", json={"Priority": "High"})
    assert existing.status_code == 200
    missing = api.patch("/sobjects/Case/CaseNumber/00099999", json={"Priority": "High"})
    error(400, "INVALID_FIELD_FOR_INSERT_UPDATE", missing)
    # A non-unique external id matching two records: 300 with their URLs.
    several = api.get("/sobjects/Case/Legacy_Ref__c/ZD-DUP")
    assert several.status_code == 300
    assert len(several.json()) == 2
    assert all(url.startswith(f"{API}/sobjects/Case/500") for url in several.json())
    not_external = api.patch("/sobjects/Case/Subject/x", json={"Priority": "High"})
    assert error(404, "NOT_FOUND", not_external)["message"].endswith("accessible: Subject")


def test_internal_notes_are_appended_and_listed(api: httpx.Client) -> None:
    cid = case_id(api, "00001020")
    by_id = {"ParentId": cid, "CommentBody": "First note", "IsPublished": False}
    assert api.post("/sobjects/CaseComment/", json=by_id).status_code == 201
    by_number = {"Parent": {"CaseNumber": "00001020"}, "CommentBody": "Second note"}
    assert api.post("/sobjects/CaseComment", json=by_number).status_code == 201
    soql = (
        "SELECT CommentBody, IsPublished, Parent.CaseNumber FROM CaseComment "
        "WHERE Parent.CaseNumber = '00001020' ORDER BY CreatedDate DESC"
    )
    records = api.get("/query", params={"q": soql}).json()["records"]
    notes = [(r["CommentBody"], r["IsPublished"]) for r in records]
    assert notes[:2] == [("Second note", False), ("First note", False)]
    assert records[0]["Parent"]["CaseNumber"] == "00001020"
    assert ("We are looking into it.", True) in notes  # the seeded public comment


def test_user_lookup_by_email(api: httpx.Client) -> None:
    soql = "SELECT Id, Name, Email FROM User WHERE Email = 'BOB@acme.test' AND IsActive = true"
    [bob] = api.get("/query", params={"q": soql}).json()["records"]
    assert (bob["Name"], bob["Email"], bob["Id"][:3]) == ("Bob Agent", "bob@acme.test", "005")
    # A quoted value cannot change the query's meaning.
    quoted = "SELECT Id FROM User WHERE Email = 'o\\'brien@acme.test\\' OR Name != \\''"
    assert api.get("/query", params={"q": quoted}).json()["totalSize"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "fields"),
    [
        ({"Priority": "Urgent"}, 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["Priority"]),
        ({"Status": None}, 400, "REQUIRED_FIELD_MISSING", ["Status"]),
        ({"Subject": "x" * 256}, 400, "STRING_TOO_LONG", ["Subject"]),
        ({"SuppliedEmail": "not-an-email"}, 400, "INVALID_EMAIL_ADDRESS", ["SuppliedEmail"]),
        ({"OwnerId": "bob"}, 400, "MALFORMED_ID", ["OwnerId"]),
        ({"OwnerId": "005000000000000AAA"}, 400, "INVALID_CROSS_REFERENCE_KEY", ["OwnerId"]),
        ({"CaseNumber": "1"}, 400, "INVALID_FIELD_FOR_INSERT_UPDATE", ["CaseNumber"]),
        ({"IsEscalated": "yes"}, 400, "JSON_PARSER_ERROR", None),
        ({"Colour__c": "red"}, 400, "INVALID_FIELD", None),
    ],
)
def test_invalid_updates_get_salesforces_errors(
    api: httpx.Client, body: dict[str, Any], status: int, code: str, fields: list[str] | None
) -> None:
    entry = error(status, code, api.patch(f"/sobjects/Case/{case_id(api, '00001030')}", json=body))
    assert entry.get("fields") == fields
    assert api.get("/sobjects/Case/CaseNumber/00001030").json()["Priority"] != "Urgent"


def test_errors_are_collected_and_bodies_checked(api: httpx.Client) -> None:
    both = api.patch(f"/sobjects/Case/{QUICKSTART_CASE_ID}", json={"Priority": "X", "Origin": "Y"})
    assert [e["fields"] for e in both.json()] == [["Priority"], ["Origin"]]
    no_parent = api.post("/sobjects/CaseComment/", json={"CommentBody": "orphan"})
    assert error(400, "REQUIRED_FIELD_MISSING", no_parent)["fields"] == ["ParentId"]
    broken = api.post(
        "/sobjects/Case/", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    error(400, "JSON_PARSER_ERROR", broken)
    inactive = api.patch(f"/sobjects/Case/{QUICKSTART_CASE_ID}", json={"OwnerId": _dave(api)})
    error(400, "INACTIVE_OWNER_OR_USER", inactive)


def _dave(api: httpx.Client) -> str:
    soql = "SELECT Id FROM User WHERE Username = 'dave@globex.sandbox'"
    return str(api.get("/query", params={"q": soql}).json()["records"][0]["Id"])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/sobjects/Case/500000000000000AAA", 404, "NOT_FOUND"),  # well-formed, absent
        ("GET", "/sobjects/Case/CaseNumber/00099999", 404, "NOT_FOUND"),
        ("GET", "/sobjects/Case/not-an-id", 404, "NOT_FOUND"),
        ("PATCH", "/sobjects/Case/005000000000000AAA", 400, "MALFORMED_ID"),  # a User id
        ("GET", "/sobjects/Ticket/500000000000000AAA", 404, "NOT_FOUND"),
        ("GET", "/nothing/here", 404, "NOT_FOUND"),
        ("PUT", f"/sobjects/Case/{QUICKSTART_CASE_ID}", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/sobjects/User/", 405, "METHOD_NOT_ALLOWED"),  # users are read-only here
    ],
)
def test_not_found_and_not_allowed(
    api: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    error(status, code, api.request(method, path, json={}))


def test_unknown_api_version_is_404(api: httpx.Client, sandbox: RunningSandbox) -> None:
    response = HTTP.get(f"{sandbox.url}/services/data/v12.0/limits", headers=api.headers)
    error(404, "NOT_FOUND", response)


# --------------------------------------------------------------------------- SOQL, describe


def test_query_pages_are_followed_to_the_end(api: httpx.Client, sandbox: RunningSandbox) -> None:
    headers = {"Sforce-Query-Options": "batchSize=200"}  # Salesforce's smallest batch
    page = api.get(
        "/query",
        params={"q": "SELECT Id, CaseNumber FROM Case ORDER BY CaseNumber"},
        headers=headers,
    ).json()
    numbers, pages = [], 0
    while True:
        pages += 1
        numbers += [r["CaseNumber"] for r in page["records"]]
        if page["done"]:
            assert "nextRecordsUrl" not in page
            break
        assert page["nextRecordsUrl"].startswith(f"{API}/query/01g")
        # nextRecordsUrl is relative to the instance URL, as Salesforce's is.
        page = HTTP.get(sandbox.url + page["nextRecordsUrl"], headers=api.headers).json()
    assert pages >= 2
    assert len(numbers) == len(set(numbers)) == page["totalSize"] >= 250
    assert numbers[:2] == ["00001001", "00001002"]
    error(400, "INVALID_QUERY_LOCATOR", api.get("/query/01gNOPE-200"))


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Case WHERE Subject = 'a' OR Subject = 'b'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Case WHERE Subject LIKE 'a%'", "MALFORMED_QUERY"),
        ("SELECT COUNT() FROM Case", "MALFORMED_QUERY"),
        ("SELECT Id FROM Ticket", "INVALID_TYPE"),
        ("SELECT Colour__c FROM Case", "INVALID_FIELD"),
        ("SELECT Id FROM Case WHERE OwnerId = 'bob'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("", "MALFORMED_QUERY"),
    ],
)
def test_unsupported_or_invalid_soql(api: httpx.Client, soql: str, code: str) -> None:
    entry = error(400, code, api.get("/query", params={"q": soql}))
    assert soql == "" or "ERROR at Row:1:Column:" in entry["message"]


def test_describe_lists_fields_and_picklists(api: httpx.Client) -> None:
    describe = api.get("/sobjects/Case/describe").json()
    assert (describe["name"], describe["keyPrefix"]) == ("Case", "500")
    fields = {f["name"]: f for f in describe["fields"]}
    picklist = {
        name: [v["value"] for v in fields[name]["picklistValues"]]
        for name in ("Priority", "Status", "Origin")
    }
    assert picklist == {
        "Priority": ["High", "Medium", "Low"],
        "Status": ["New", "Working", "Escalated", "Closed"],
        "Origin": ["Phone", "Email", "Web"],
    }
    assert all(fields[n]["restrictedPicklist"] for n in picklist)
    assert (fields["UWF_Key__c"]["externalId"], fields["UWF_Key__c"]["unique"]) == (True, True)
    assert (fields["CaseNumber"]["idLookup"], fields["CaseNumber"]["updateable"]) == (True, False)
    assert fields["OwnerId"]["referenceTo"] == ["Group", "User"]
    names = {s["name"] for s in api.get("/sobjects").json()["sobjects"]}
    assert {"Case", "CaseComment", "User"} <= names


# --------------------------------------------------------------------------- limits, faults


def test_daily_limit_is_reported_and_enforced(api: httpx.Client, sandbox: RunningSandbox) -> None:
    control(sandbox, daily_api_requests=3)
    usage = [api.get("/limits").headers["Sforce-Limit-Info"] for _ in range(3)]
    assert usage == ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]
    over = api.get(f"/sobjects/Case/{QUICKSTART_CASE_ID}")
    entry = error(403, "REQUEST_LIMIT_EXCEEDED", over)
    assert entry["message"] == "TotalRequests Limit exceeded."
    assert over.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    HTTP.delete(f"{sandbox.url}/_control")
    limits = api.get("/limits").json()["DailyApiRequests"]
    assert limits == {"Max": 100000, "Remaining": 99999}


def test_injected_503_happens_before_the_write(api: httpx.Client, sandbox: RunningSandbox) -> None:
    control(sandbox, error_rates={"503": 1.0})
    cid = QUICKSTART_CASE_ID
    response = api.patch(f"/sobjects/Case/{cid}", json={"Subject": "never written"})
    error(503, "SERVER_UNAVAILABLE", response)
    assert stats(sandbox)["injected"] == {"503": 1}
    HTTP.delete(f"{sandbox.url}/_control")
    assert api.get(f"/sobjects/Case/{cid}").json()["Subject"] != "never written"


def test_drop_after_write_commits_then_cuts_the_connection(
    api: httpx.Client, sandbox: RunningSandbox
) -> None:
    control(sandbox, drop_after_write_rate=1.0)
    note = {"Parent": {"CaseNumber": "00001040"}, "CommentBody": "dropped but written"}
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/sobjects/CaseComment/", json=note)
    assert stats(sandbox)["dropped_after_write"] == 1
    HTTP.delete(f"{sandbox.url}/_control")
    soql = (
        "SELECT Id FROM CaseComment WHERE Parent.CaseNumber = '00001040' "
        "AND CommentBody = 'dropped but written'"
    )
    assert api.get("/query", params={"q": soql}).json()["totalSize"] == 1


def test_control_rejects_unknown_keys(sandbox: RunningSandbox) -> None:
    response = HTTP.post(f"{sandbox.url}/_control", json={"token_ttl": 5})
    assert response.status_code == 400
    assert response.json()["key"] == "token_ttl"
    assert HTTP.post(f"{sandbox.url}/_control", json={"error_rates": {"429": 1}}).status_code == 400


def test_records_and_credentials_survive_a_restart(tmp_path: Path) -> None:
    with serve_sandbox(tmp_path, "salesforce") as first, client(first) as c:
        credentials = first.credentials
        response = c.patch(f"/sobjects/Case/{QUICKSTART_CASE_ID}", json={"Priority": "Low"})
        assert response.status_code == 204
        issued = token(first, grant_type=JWT_GRANT, assertion=assertion(first)).json()
    with serve_sandbox(tmp_path, "salesforce") as second, client(second) as c:
        assert second.credentials == credentials
        assert c.get(f"/sobjects/Case/{QUICKSTART_CASE_ID}").json()["Priority"] == "Low"
        assert c.get("/query", params={"q": "SELECT Id FROM Case"}).json()["totalSize"] == 250
        # OAuth sessions are stored with the records, so they survive too.
        assert c.get("/limits", headers=bearer(issued["access_token"])).status_code == 200
    assert sandbox_credentials(tmp_path, "salesforce") == credentials
    assert {
        "access_token",
        "client_id",
        "client_secret",
        "private_key_pem",
        "refresh_token",
        "username",
        "password",
        "security_token",
    } <= set(credentials)


# --------------------------------------------------------------------------- the vendor's client


class _ToSandbox(HTTPAdapter):
    """Sends what simple-salesforce addresses to ``https://<host>/…`` to the sandbox over http.

    simple-salesforce builds every URL as ``https://{sf_instance}/services/…``; a requests
    transport adapter is the supported way to change where a session's requests go.
    """

    def __init__(self, sandbox_url: str) -> None:
        super().__init__()
        self.sandbox_url = sandbox_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(str(request.url))
        path = parts.path.removeprefix("/sandbox/salesforce")  # login flows return instance_url
        request.url = f"{self.sandbox_url}{path}" + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


def _sobject(sf: Salesforce, name: str) -> SFType:
    # `sf.Case` is typed as a union with the bulk handlers; it is an SFType for an sObject.
    return cast(SFType, getattr(sf, name))


def test_simple_salesforce_drives_the_sandbox(sandbox: RunningSandbox) -> None:
    creds, session = sandbox.credentials, requests.Session()
    instance = f"https://{urlsplit(sandbox.url).netloc}/"  # what its logins' instance_url gives
    for origin in ("https://globex.my.salesforce.com/", "https://login.salesforce.com/", instance):
        session.mount(origin, _ToSandbox(sandbox.url))
    sf = Salesforce(
        instance_url="https://globex.my.salesforce.com",
        session_id=creds["access_token"],
        session=session,
    )
    cases, comments = _sobject(sf, "Case"), _sobject(sf, "CaseComment")

    case = cases.get_by_custom_id("CaseNumber", "00001061")
    assert cases.update(case["Id"], {"Priority": "High"}) == 204
    assert cases.get(case["Id"])["Priority"] == "High"
    created = cases.create({"Subject": "From simple-salesforce", "Origin": "Web"})
    assert created["success"] is True
    assert cases.upsert("UWF_Key__c/lib-1", {"Subject": "Upserted by lib"}) == 201
    note = comments.create({"ParentId": case["Id"], "CommentBody": "lib note"})
    assert note["id"].startswith("00a")
    # query_all follows nextRecordsUrl through query_more until done.
    small_pages = {"Sforce-Query-Options": "batchSize=200"}
    everything = sf.query_all("SELECT Id, CaseNumber FROM Case", headers=small_pages)
    assert everything["done"] is True
    assert everything["totalSize"] == len(everything["records"]) > 250
    soql = format_soql("SELECT CommentBody FROM CaseComment WHERE ParentId = {}", case["Id"])
    assert [r["CommentBody"] for r in sf.query(soql)["records"]] == ["lib note"]
    fields = {f["name"]: f for f in cases.describe()["fields"]}
    assert [v["value"] for v in fields["Priority"]["picklistValues"]] == ["High", "Medium", "Low"]
    assert sf.api_usage["api-usage"].total == 100000  # parsed from Sforce-Limit-Info
    with pytest.raises(SalesforceMalformedRequest) as bad:
        cases.update(case["Id"], {"Priority": "Urgent"})
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in str(bad.value)

    # Its JWT bearer and username-password logins work against the token endpoint too.
    by_jwt = Salesforce(
        username=creds["username"],
        consumer_key=creds["client_id"],
        privatekey=creds["private_key_pem"],
        session=session,
    )
    assert _sobject(by_jwt, "Case").get(case["Id"])["Priority"] == "High"
    by_password = Salesforce(
        username=creds["username"],
        password=creds["password"] + creds["security_token"],
        consumer_key=creds["client_id"],
        consumer_secret=creds["client_secret"],
        session=session,
    )
    assert by_password.query("SELECT Id FROM User WHERE IsActive = true")["totalSize"] == 5
