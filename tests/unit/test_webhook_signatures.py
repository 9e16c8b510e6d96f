"""Webhook signatures: genuine deliveries pass; any change, a stale or a future time does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from uwf.triggers import (
    CLOCK_SKEW_SECONDS,
    REPLAY_WINDOW_SECONDS,
    SignatureError,
    hubspot_v3_uri,
    idempotency_key,
    parse_outbound_message,
    sign_hmac,
    sign_hubspot_v3,
    sign_zendesk,
    verify_hmac,
    verify_hubspot_v3,
    verify_salesforce_organization,
    verify_salesforce_token,
    verify_zendesk,
)

NOW = 1_790_000_000.0  # a fixed "now" (2026): the checks take the clock as an argument
URI = "https://uwf.example.com/v1/webhooks/umbrella/umbrella-hubspot"

secrets = st.text(min_size=1, max_size=64)
bodies = st.binary(max_size=512)
# Offsets from NOW that are inside the window: up to 5 minutes old, at most the skew ahead.
fresh = st.integers(min_value=-REPLAY_WINDOW_SECONDS, max_value=CLOCK_SKEW_SECONDS)
stale = st.integers(min_value=REPLAY_WINDOW_SECONDS + 1, max_value=10**8)
future = st.integers(min_value=CLOCK_SKEW_SECONDS + 1, max_value=10**8)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hubspot(secret: str, body: bytes, ts_ms: str, signature: str, uri: str = URI) -> None:
    verify_hubspot_v3(
        secret, method="POST", uri=uri, body=body, signature=signature, timestamp=ts_ms, now=NOW
    )


def _zendesk(secret: str, body: bytes, ts: str, signature: str) -> None:
    verify_zendesk(secret, body=body, signature=signature, timestamp=ts, now=NOW)


# -- genuine deliveries pass ---------------------------------------------------------------


@given(secret=secrets, body=bodies, offset=fresh)
def test_genuine_deliveries_pass_every_scheme(secret: str, body: bytes, offset: int) -> None:
    ts = int(NOW) + offset
    ts_ms = str(ts * 1000)
    _hubspot(secret, body, ts_ms, sign_hubspot_v3(secret, "POST", URI, body, ts_ms))
    iso = _iso(ts)
    _zendesk(secret, body, iso, sign_zendesk(secret, body, iso))
    verify_hmac(secret, body=body, header=sign_hmac(secret, body, ts), now=NOW)


# -- any mutation is refused ---------------------------------------------------------------


@given(secret=secrets, body=bodies, other=bodies, offset=fresh)
def test_a_changed_body_is_refused(secret: str, body: bytes, other: bytes, offset: int) -> None:
    assume(other != body)
    ts = int(NOW) + offset
    ts_ms, iso = str(ts * 1000), _iso(ts)
    with pytest.raises(SignatureError):
        _hubspot(secret, other, ts_ms, sign_hubspot_v3(secret, "POST", URI, body, ts_ms))
    with pytest.raises(SignatureError):
        _zendesk(secret, other, iso, sign_zendesk(secret, body, iso))
    with pytest.raises(SignatureError):
        verify_hmac(secret, body=other, header=sign_hmac(secret, body, ts), now=NOW)


@given(secret=secrets, other=secrets, body=bodies, offset=fresh)
def test_another_secret_is_refused(secret: str, other: str, body: bytes, offset: int) -> None:
    assume(other != secret)
    ts = int(NOW) + offset
    ts_ms, iso = str(ts * 1000), _iso(ts)
    with pytest.raises(SignatureError):
        _hubspot(secret, body, ts_ms, sign_hubspot_v3(other, "POST", URI, body, ts_ms))
    with pytest.raises(SignatureError):
        _zendesk(secret, body, iso, sign_zendesk(other, body, iso))
    with pytest.raises(SignatureError):
        verify_hmac(secret, body=body, header=sign_hmac(other, body, ts), now=NOW)
    with pytest.raises(SignatureError):
        verify_salesforce_token(secret, given_token=other)


@given(secret=secrets, body=bodies, offset=fresh, shift=st.integers(1, 30), sign=st.booleans())
def test_a_changed_timestamp_is_refused(
    secret: str, body: bytes, offset: int, shift: int, sign: bool
) -> None:
    # The signature of one instant, sent with another instant still inside the window.
    ts = int(NOW) + offset
    moved = ts - shift if sign or ts + shift > NOW + CLOCK_SKEW_SECONDS else ts + shift
    assume(NOW - moved <= REPLAY_WINDOW_SECONDS)
    signature = sign_hubspot_v3(secret, "POST", URI, body, str(ts * 1000))
    with pytest.raises(SignatureError, match="does not match"):
        _hubspot(secret, body, str(moved * 1000), signature)
    with pytest.raises(SignatureError, match="does not match"):
        _zendesk(secret, body, _iso(moved), sign_zendesk(secret, body, _iso(ts)))
    header = sign_hmac(secret, body, ts).replace(f"t={ts}", f"t={moved}")
    with pytest.raises(SignatureError, match="does not match"):
        verify_hmac(secret, body=body, header=header, now=NOW)


@given(
    secret=secrets,
    body=bodies,
    position=st.integers(min_value=0),
    replacement=st.characters(codec="ascii"),
)
def test_a_changed_signature_is_refused(
    secret: str, body: bytes, position: int, replacement: str
) -> None:
    ts = int(NOW)
    genuine = {
        "hubspot": sign_hubspot_v3(secret, "POST", URI, body, str(ts * 1000)),
        "zendesk": sign_zendesk(secret, body, _iso(ts)),
        "hmac": sign_hmac(secret, body, ts).split("v1=")[1],
    }
    for scheme, signature in genuine.items():
        index = position % len(signature)
        forged = signature[:index] + replacement + signature[index + 1 :]
        if scheme == "hmac":  # hex digests compare case-insensitively, as senders differ
            assume(forged.lower() != signature)
        assume(forged != signature)
        checks = {
            "hubspot": lambda f: _hubspot(secret, body, str(ts * 1000), f),
            "zendesk": lambda f: _zendesk(secret, body, _iso(ts), f),
            "hmac": lambda f: verify_hmac(secret, body=body, header=f"t={ts},v1={f}", now=NOW),
        }
        with pytest.raises(SignatureError):
            checks[scheme](forged)


# -- the replay window ---------------------------------------------------------------------


@given(secret=secrets, body=bodies, age=stale)
def test_stale_deliveries_are_refused(secret: str, body: bytes, age: int) -> None:
    ts = int(NOW) - age
    ts_ms, iso = str(ts * 1000), _iso(ts)
    with pytest.raises(SignatureError, match="old"):
        _hubspot(secret, body, ts_ms, sign_hubspot_v3(secret, "POST", URI, body, ts_ms))
    with pytest.raises(SignatureError, match="old"):
        _zendesk(secret, body, iso, sign_zendesk(secret, body, iso))
    with pytest.raises(SignatureError, match="old"):
        verify_hmac(secret, body=body, header=sign_hmac(secret, body, ts), now=NOW)


@given(secret=secrets, body=bodies, ahead=future)
def test_deliveries_from_the_future_are_refused(secret: str, body: bytes, ahead: int) -> None:
    ts = int(NOW) + ahead
    ts_ms, iso = str(ts * 1000), _iso(ts)
    with pytest.raises(SignatureError, match="future"):
        _hubspot(secret, body, ts_ms, sign_hubspot_v3(secret, "POST", URI, body, ts_ms))
    with pytest.raises(SignatureError, match="future"):
        _zendesk(secret, body, iso, sign_zendesk(secret, body, iso))
    with pytest.raises(SignatureError, match="future"):
        verify_hmac(secret, body=body, header=sign_hmac(secret, body, ts), now=NOW)


# -- replays: one key per event --------------------------------------------------------------


@given(
    connection=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    first=st.text(min_size=1, max_size=600),
    second=st.text(min_size=1, max_size=600),
)
def test_the_same_event_id_gives_the_same_key_and_others_another(
    connection: str, first: str, second: str
) -> None:
    key = idempotency_key(connection, first)
    assert key == idempotency_key(connection, first)
    assert len(key) <= 255  # the idempotency_keys column
    if first != second:
        assert idempotency_key(connection, second) != key


# -- details each vendor documents ------------------------------------------------------------


def test_hubspot_signs_the_uri_with_listed_characters_decoded() -> None:
    # HubSpot decodes %3A, %2F, %40, … in the URI before signing; other escapes stay.
    sent = URI + "?token=a%3Ab%40c%2Fd&x=%20y%26"
    assert hubspot_v3_uri(sent) == URI + "?token=a:b@c/d&x=%20y%26"
    ts_ms = str(int(NOW) * 1000)
    signature = sign_hubspot_v3("s3cret", "POST", URI + "?token=a:b@c/d&x=%20y%26", b"[]", ts_ms)
    _hubspot("s3cret", b"[]", ts_ms, signature, uri=sent)


def test_zendesk_documented_example_verifies() -> None:
    # The example in Zendesk's "Verifying webhook authenticity" page, at its own time.
    when = datetime(2021, 7, 25, 10, 0, tzinfo=UTC).timestamp()
    verify_zendesk(
        "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=",
        body=b'{"say": "hello"}',
        signature=sign_zendesk(
            "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=",
            b'{"say": "hello"}',
            "2021-07-25T10:00:00Z",
        ),
        timestamp="2021-07-25T10:00:00Z",
        now=when,
    )


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=abc", "t=1790000000", "t=abc,v1=00", "t=1790000000;v1=00", "garbage"],
)
def test_malformed_hmac_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_hmac("secret", body=b"{}", header=header, now=NOW)


def test_hmac_accepts_any_of_several_signatures_during_rotation() -> None:
    ts = int(NOW)
    new = sign_hmac("new-secret", b"{}", ts).split("v1=")[1]
    old = sign_hmac("old-secret", b"{}", ts).split("v1=")[1]
    verify_hmac("new-secret", body=b"{}", header=f"t={ts},v1={old},v1={new}", now=NOW)


OUTBOUND = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000062EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://globex.my.salesforce.com/services/Soap/c/59.0</EnterpriseUrl>
   <PartnerUrl>https://globex.my.salesforce.com/services/Soap/u/59.0</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500000000000001AAA</sf:Id>
     <sf:CaseNumber>00001123</sf:CaseNumber>
     <sf:Priority>High</sf:Priority>
     <sf:Description xsi:nil="true"/>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"""


def test_outbound_message_is_read_as_salesforce_defines_it() -> None:
    message = parse_outbound_message(OUTBOUND)
    assert message.organization_id == "00D000000000062EAA"
    assert message.notifications == [
        {
            "id": "04l000000000001AAA",
            "organization_id": "00D000000000062EAA",
            "action_id": "04k000000000001AAA",
            "sobject_type": "Case",
            "sobject": {
                "Id": "500000000000001AAA",
                "CaseNumber": "00001123",
                "Priority": "High",
                "Description": None,
            },
        }
    ]
    verify_salesforce_organization("00D000000000062", given=message.organization_id)
    with pytest.raises(SignatureError):
        verify_salesforce_organization("00D000000000099", given=message.organization_id)


def test_outbound_message_refuses_entity_expansion() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;&a;</x>'
    with pytest.raises(ValueError, match="XML"):
        parse_outbound_message(bomb)
