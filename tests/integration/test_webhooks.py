"""Inbound webhooks over real HTTP: signed CRM events start workflows, exactly once.

Each test runs a full `uwf serve` (API, worker, sandboxes) on loopback, on SQLite and on
PostgreSQL, with the example metadata plus one trigger per signing scheme. Events are signed the
way each vendor signs them; outcomes are read back from the executions and, for Zendesk, from
the CRM itself.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, LiveServer, fresh_pg_database_sync, start_server
from uwf.settings import Settings
from uwf.triggers import ACK, MAX_BODY_BYTES, sign_hmac, sign_hubspot_v3, sign_zendesk

ORG = "00D000000000062EAA"
TRIGGERS = f"""
kind: trigger
name: high_priority
tenant: umbrella
connection: umbrella-hubspot
scheme: hubspot_v3
secret: {{env: UMBRELLA_HUBSPOT_CLIENT_SECRET}}
event: "event.subscriptionType == 'ticket.propertyChange' && event.propertyValue == 'HIGH'"
workflow: escalate_case
input:
  case_id: "{{{{ event.objectId }}}}"
  priority: P2
---
kind: trigger
name: case_escalated
tenant: globex
connection: globex-salesforce
scheme: salesforce_outbound
secret: {{env: GLOBEX_OUTBOUND_TOKEN}}
organization_id: {ORG}
workflow: escalate_case
input:
  case_id: "{{{{ event.sobject.CaseNumber }}}}"
  priority: P1
  reason: "Escalated in Salesforce ({{{{ event.sobject.Subject }}}})"
---
kind: trigger
name: generic
tenant: hooli
connection: hooli-freshdesk
scheme: hmac
secret: {{env: HOOLI_WEBHOOK_SECRET}}
workflow: escalate_case
input:
  case_id: "{{{{ event.ticket.id }}}}"
  priority: "{{{{ event.priority }}}}"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The Pipe DB the server uses: SQLite under its home, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_pg_database_sync(request.getfixturevalue("pg_server")) as url:
        yield url


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "ACME_ZENDESK_WEBHOOK_SECRET": "zd-" + secrets.token_urlsafe(24),
        "UMBRELLA_HUBSPOT_CLIENT_SECRET": "hs-" + secrets.token_hex(16),
        "GLOBEX_OUTBOUND_TOKEN": "sf-" + secrets.token_urlsafe(24),
        "HOOLI_WEBHOOK_SECRET": "fd-" + secrets.token_urlsafe(24),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def server(
    tmp_path: Path, database_url: str | None, secrets_env: dict[str, str]
) -> Iterator[LiveServer]:
    metadata = tmp_path / "metadata"
    shutil.copytree(EXAMPLES, metadata)
    (metadata / "triggers.yaml").write_text(TRIGGERS)
    home = tmp_path / "home"
    key = "test-admin-key-" + secrets.token_hex(8)
    settings = Settings(
        home=home, metadata_dir=metadata, poll_interval=0.05, database_url=database_url
    )
    running, thread = start_server(settings, key)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", key, home, settings)
    finally:
        running.should_exit = True
        thread.join(timeout=20)


def _zendesk_event(ticket: int, event_id: str, tags: list[str]) -> bytes:
    return json.dumps(
        {
            "type": "zen:event-type:ticket.tags_changed",
            "account_id": 12514403,
            "id": event_id,
            "time": _iso(time.time()),
            "zendesk_event_version": "2022-11-06",
            "subject": f"zen:ticket:{ticket}",
            "detail": {"id": str(ticket), "tags": tags, "priority": "NORMAL"},
            "event": {"tags": {"added": ["vip"], "removed": []}},
        }
    ).encode()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _post_zendesk(
    client: httpx.Client, secret: str, body: bytes, *, at: float | None = None
) -> httpx.Response:
    stamp = _iso(time.time() if at is None else at)
    return client.post(
        "/v1/webhooks/acme/acme-zendesk",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Id": "01F1KRFQ6BG29CNWFR60NK5FNY",
            "X-Zendesk-Webhook-Invocation-Id": "8350205582",
            "X-Zendesk-Webhook-Signature": sign_zendesk(secret, body, stamp),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        },
    )


def _wait(server: LiveServer, tenant: str, execution_id: str) -> dict[str, Any]:
    with server.client() as client:
        deadline = time.monotonic() + 30
        while True:
            execution: dict[str, Any] = client.get(
                f"/v1/tenants/{tenant}/executions/{execution_id}"
            ).json()
            if execution["status"] not in ("queued", "running") or time.monotonic() > deadline:
                return execution
            time.sleep(0.1)


def _executions(server: LiveServer, tenant: str) -> list[dict[str, Any]]:
    with server.client() as client:
        items: list[dict[str, Any]] = client.get(
            f"/v1/tenants/{tenant}/executions", params={"limit": 200}
        ).json()["items"]
        return items


def test_zendesk_vip_tag_escalates_the_ticket_once(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    secret = secrets_env["ACME_ZENDESK_WEBHOOK_SECRET"]
    event_id = "cbe4028c-7239-495d-b020-f22348516046"
    body = _zendesk_event(123, event_id, ["enterprise", "vip"])
    with server.client(auth=False) as client, server.sandbox() as sandbox:
        first = _post_zendesk(client, secret, body)
        assert first.status_code == 202, first.text
        receipt = first.json()
        execution_id = receipt["execution_id"]
        assert receipt["events"] == [
            {
                "event_id": event_id,
                "outcome": "started",
                "trigger": "vip_escalation",
                "workflow": "escalate_case",
                "execution_id": execution_id,
            }
        ]
        assert first.headers["Location"] == f"/v1/tenants/acme/executions/{execution_id}"
        execution = _wait(server, "acme", execution_id)
        assert execution["status"] == "succeeded", execution
        assert execution["input"] == {
            "case_id": "123",
            "priority": "P1",
            "reason": f"Tagged vip in Zendesk (event {event_id})",
        }

        # Zendesk retries: the same delivery, and the same event signed again a minute later.
        again = _post_zendesk(client, secret, body)
        later = _post_zendesk(client, secret, body, at=time.time() + 30)
        for repeat in (again, later):
            assert repeat.status_code == 200, repeat.text
            assert repeat.json()["execution_id"] == execution_id
            assert repeat.json()["events"][0]["outcome"] == "duplicate"

        ticket = sandbox.get("/api/v2/tickets/123.json").json()["ticket"]
        assert ticket["priority"] == "urgent"
        comments = sandbox.get("/api/v2/tickets/123/comments.json").json()["comments"]
        notes = [c["body"] for c in comments if event_id in c["body"]]
        assert notes == [f"Escalated: Tagged vip in Zendesk (event {event_id})"]
    assert [e["id"] for e in _executions(server, "acme")] == [execution_id]


def test_zendesk_events_the_trigger_does_not_want_are_ignored(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    secret = secrets_env["ACME_ZENDESK_WEBHOOK_SECRET"]
    with server.client(auth=False) as client:
        response = _post_zendesk(client, secret, _zendesk_event(124, "e-no-vip", ["billing"]))
    assert response.status_code == 200, response.text
    assert response.json()["events"] == [
        {
            "event_id": "e-no-vip",
            "outcome": "ignored",
            "trigger": None,
            "workflow": None,
            "execution_id": None,
        }
    ]
    assert _executions(server, "acme") == []


def test_hubspot_v3_batch_starts_one_execution_per_matching_event(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    secret = secrets_env["UMBRELLA_HUBSPOT_CLIENT_SECRET"]
    events = [
        {
            "eventId": 1001,
            "subscriptionId": 42,
            "portalId": 62515,
            "appId": 54321,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": "ticket.propertyChange",
            "attemptNumber": 0,
            "objectId": 1124,
            "propertyName": "hs_ticket_priority",
            "propertyValue": value,
            "changeSource": "CRM_UI",
        }
        for value in ("HIGH",)
    ]
    events.append({**events[0], "eventId": 1002, "objectId": 1125, "propertyValue": "LOW"})
    body = json.dumps(events).encode()
    # HubSpot signs the URL it called, with some characters decoded (%3A, %40, …).
    path = "/v1/webhooks/umbrella/umbrella-hubspot?portal=a%3Ab%40c"

    def deliver(ts_ms: str, signature_secret: str = secret) -> httpx.Response:
        signature = sign_hubspot_v3(signature_secret, "POST", server.base_url + path, body, ts_ms)
        with server.client(auth=False) as client:
            return client.post(
                path,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-HubSpot-Signature-v3": signature,
                    "X-HubSpot-Request-Timestamp": ts_ms,
                },
            )

    now_ms = str(int(time.time() * 1000))
    assert deliver(now_ms, "not-the-client-secret").status_code == 401
    response = deliver(now_ms)
    assert response.status_code == 202, response.text
    outcomes = [(e["event_id"], e["outcome"]) for e in response.json()["events"]]
    assert outcomes == [("1001", "started"), ("1002", "ignored")]
    execution = _wait(server, "umbrella", response.json()["events"][0]["execution_id"])
    assert execution["status"] == "succeeded", execution
    assert execution["output"]["case_id"] == 1124
    assert execution["output"]["priority"] == "high"

    retry = deliver(str(int(time.time() * 1000)))
    assert retry.status_code == 200
    assert [e["outcome"] for e in retry.json()["events"]] == ["duplicate", "ignored"]
    assert len(_executions(server, "umbrella")) == 1


def _outbound_message(org: str, notification_id: str, case_number: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://globex.my.salesforce.com/services/Soap/c/59.0/00D</EnterpriseUrl>
   <PartnerUrl>https://globex.my.salesforce.com/services/Soap/u/59.0/00D</PartnerUrl>
   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500000000000001AAA</sf:Id>
     <sf:CaseNumber>{case_number}</sf:CaseNumber>
     <sf:Subject>Plant offline</sf:Subject>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def test_salesforce_outbound_message_is_acked_and_runs_once(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    token = secrets_env["GLOBEX_OUTBOUND_TOKEN"]
    body = _outbound_message(ORG, "04l000000000001AAA", "00001123")
    url = "/v1/webhooks/globex/globex-salesforce"
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    with server.client(auth=False) as client:
        assert client.post(url, content=body, headers=headers).status_code == 401
        wrong = client.post(url, params={"token": "guess"}, content=body, headers=headers)
        assert wrong.status_code == 401
        other_org = _outbound_message("00D0000000000ZZEAA", "04l000000000002AAA", "00001123")
        foreign = client.post(url, params={"token": token}, content=other_org, headers=headers)
        assert foreign.status_code == 401
        assert "organisation" in foreign.json()["detail"]

        first = client.post(url, params={"token": token}, content=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.text == ACK
        assert first.headers["content-type"].startswith("text/xml")
        execution_id = first.headers["X-UWF-Executions"]
        again = client.post(url, params={"token": token}, content=body, headers=headers)
        assert again.text == ACK
        assert again.headers["X-UWF-Executions"] == execution_id
    execution = _wait(server, "globex", execution_id)
    assert execution["status"] == "succeeded", execution
    assert execution["output"]["priority"] == "high"
    assert [e["id"] for e in _executions(server, "globex")] == [execution_id]


def test_generic_hmac_sender_starts_the_workflow(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    secret = secrets_env["HOOLI_WEBHOOK_SECRET"]
    body = json.dumps({"ticket": {"id": 1123}, "priority": "P1"}).encode()
    url = "/v1/webhooks/hooli/hooli-freshdesk"
    with server.client(auth=False) as client:
        headers = {
            "X-UWF-Signature": sign_hmac(secret, body, int(time.time())),
            "X-UWF-Event-Id": "fd-evt-77",
        }
        first = client.post(url, content=body, headers=headers)
        assert first.status_code == 202, first.text
        again = client.post(url, content=body, headers=headers)
        assert again.status_code == 200
        assert again.json()["execution_id"] == first.json()["execution_id"]
        no_id = client.post(
            url, content=body, headers={"X-UWF-Signature": headers["X-UWF-Signature"]}
        )
        assert no_id.status_code == 422
        assert "X-UWF-Event-Id" in no_id.json()["detail"]
    execution = _wait(server, "hooli", first.json()["execution_id"])
    assert execution["status"] == "succeeded", execution
    assert execution["output"]["priority"] == "urgent"
    assert len(_executions(server, "hooli")) == 1
    with server.client() as client:
        audit = client.get("/v1/audit", params={"tenant": "hooli"}).json()["items"]
    assert [(r["action"], r["actor"], r["target"]) for r in audit] == [
        ("action.accepted", "webhook:hooli-freshdesk", execution["id"])
    ]  # the repeated delivery started nothing, so it is not in the log


def test_refused_deliveries_are_problems_and_store_nothing(
    server: LiveServer, secrets_env: dict[str, str]
) -> None:
    secret = secrets_env["ACME_ZENDESK_WEBHOOK_SECRET"]
    body = _zendesk_event(123, "evt-refused", ["vip"])
    with server.client(auth=False) as client:
        unsigned = client.post("/v1/webhooks/acme/acme-zendesk", content=body)
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"] == "application/problem+json"
        forged = _post_zendesk(client, "not-the-secret", body)
        assert forged.status_code == 401
        assert "does not match" in forged.json()["detail"]
        stale = _post_zendesk(client, secret, body, at=time.time() - 301)
        assert stale.status_code == 401
        assert "old" in stale.json()["detail"]
        future = _post_zendesk(client, secret, body, at=time.time() + 600)
        assert future.status_code == 401

        # No trigger, no tenant, no connection, another tenant's connection: the same 404.
        misses = [
            client.post(path, content=body)
            for path in (
                "/v1/webhooks/acme/nope",
                "/v1/webhooks/nobody/acme-zendesk",
                "/v1/webhooks/acme/umbrella-hubspot",
                "/v1/webhooks/contoso/contoso-dynamics",
            )
        ]
        assert {(r.status_code, r.json()["detail"]) for r in misses} == {
            (404, "no webhook endpoint at this address")
        }

        huge = b'{"id": "x", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        too_large = _post_zendesk(client, secret, huge)
        assert too_large.status_code == 413

        # A verified event whose mapped input the workflow refuses (case id with a space).
        bad = _post_zendesk(
            client,
            secret,
            _zendesk_event(123, "evt-bad", ["vip"]).replace(b'"id": "123"', b'"id": "12 3"'),
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["path"] == "/input/case_id"
        not_json = _post_zendesk(client, secret, b"<xml/>")
        assert not_json.status_code == 400
    assert _executions(server, "acme") == []


def test_an_unset_secret_answers_503_without_naming_it(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_ZENDESK_WEBHOOK_SECRET")
    with server.client(auth=False) as client:
        response = _post_zendesk(client, "whatever", _zendesk_event(123, "evt-503", ["vip"]))
    assert response.status_code == 503
    assert "ACME_ZENDESK_WEBHOOK_SECRET" not in response.text
    assert _executions(server, "acme") == []


def test_an_unsigned_delivery_is_refused_before_the_secret_is_needed(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe or a fuzzer without signature headers gets 401, even where the secret is unset.
    monkeypatch.delenv("ACME_ZENDESK_WEBHOOK_SECRET")
    with server.client(auth=False) as client:
        response = client.post(
            "/v1/webhooks/acme/acme-zendesk",
            content=_zendesk_event(123, "evt-unsigned", ["vip"]),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 401
    assert "x-zendesk-webhook-signature" in response.json()["detail"]
    assert _executions(server, "acme") == []
