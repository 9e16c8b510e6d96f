"""How each sender signs a webhook delivery, and how we check it.

Every check is pure (no I/O, `now` passed in) so the property tests can drive it, compares in
constant time (`hmac.compare_digest`), and raises `SignatureError` with a reason that names
what was wrong but never the secret or the expected value.

The replay window: a delivery whose signed timestamp is more than `REPLAY_WINDOW_SECONDS` old
is refused, and so is one more than `CLOCK_SKEW_SECONDS` in the future (a sender's clock may
run a little ahead of ours; a signature minted far ahead would stay replayable for longer).
Within the window, replays are stopped by the event id (`idempotency_keys`), not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "REPLAY_WINDOW_SECONDS",
    "SignatureError",
    "hubspot_v3_uri",
    "sign_hmac",
    "sign_hubspot_v3",
    "sign_zendesk",
    "verify_hmac",
    "verify_hubspot_v3",
    "verify_salesforce_organization",
    "verify_salesforce_token",
    "verify_zendesk",
]

REPLAY_WINDOW_SECONDS = 300
CLOCK_SKEW_SECONDS = 60


class SignatureError(Exception):
    """A delivery is not authentic, or not fresh. The API answers 401."""


def _check_window(timestamp: float, now: float) -> None:
    age = now - timestamp
    if age > REPLAY_WINDOW_SECONDS:
        raise SignatureError(
            f"the timestamp is {int(age)} s old; deliveries older than "
            f"{REPLAY_WINDOW_SECONDS} s are refused"
        )
    if -age > CLOCK_SKEW_SECONDS:
        raise SignatureError(
            f"the timestamp is {int(-age)} s in the future; at most {CLOCK_SKEW_SECONDS} s "
            "of clock skew is allowed"
        )


def _equal(expected: str, given: str) -> bool:
    # compare_digest on str only accepts ASCII; header values may carry anything.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


# -- HubSpot signature v3 -----------------------------------------------------------------------
# https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests
# (#validate-the-v3-request-signature): X-HubSpot-Signature-v3 is
# base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), the timestamp being
# X-HubSpot-Request-Timestamp in milliseconds; refuse requests older than 5 minutes. The URI is
# the full URL HubSpot called, with these URL-encoded characters decoded first:

_HUBSPOT_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODED), re.IGNORECASE)


def hubspot_v3_uri(uri: str) -> str:
    """The URI as HubSpot signs it: only the characters its documentation lists are decoded."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODED[m.group(0).upper()], uri)


def sign_hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: str) -> str:
    """The `X-HubSpot-Signature-v3` HubSpot would send (tests and tools use it)."""
    source = method.encode() + hubspot_v3_uri(uri).encode() + body + timestamp_ms.encode()
    return base64.b64encode(_hmac_sha256(secret, source)).decode()


def verify_hubspot_v3(
    secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: float,
) -> None:
    """Raise `SignatureError` unless HubSpot signed exactly this request within the window."""
    if not signature or not timestamp:
        raise SignatureError("missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp header")
    if not timestamp.isdigit() or len(timestamp) > 16:
        raise SignatureError("X-HubSpot-Request-Timestamp is not a time in milliseconds")
    _check_window(int(timestamp) / 1000, now)
    if not _equal(sign_hubspot_v3(secret, method, uri, body, timestamp), signature):
        raise SignatureError("X-HubSpot-Signature-v3 does not match the request")


# -- Zendesk webhooks ---------------------------------------------------------------------------
# https://developer.zendesk.com/documentation/webhooks/verifying/: X-Zendesk-Webhook-Signature
# is base64(HMAC-SHA256(signing secret, timestamp + body)), the timestamp being
# X-Zendesk-Webhook-Signature-Timestamp as ISO 8601 (e.g. 2021-03-25T05:09:27Z).


def sign_zendesk(secret: str, body: bytes, timestamp: str) -> str:
    """The `X-Zendesk-Webhook-Signature` Zendesk would send."""
    return base64.b64encode(_hmac_sha256(secret, timestamp.encode() + body)).decode()


def verify_zendesk(
    secret: str, *, body: bytes, signature: str | None, timestamp: str | None, now: float
) -> None:
    """Raise `SignatureError` unless Zendesk signed exactly this body within the window."""
    if not signature or not timestamp:
        raise SignatureError(
            "missing X-Zendesk-Webhook-Signature or X-Zendesk-Webhook-Signature-Timestamp header"
        )
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError("X-Zendesk-Webhook-Signature-Timestamp is not ISO 8601") from None
    if when.tzinfo is None:
        raise SignatureError("X-Zendesk-Webhook-Signature-Timestamp has no time zone")
    _check_window(when.timestamp(), now)
    if not _equal(sign_zendesk(secret, body, timestamp), signature):
        raise SignatureError("X-Zendesk-Webhook-Signature does not match the request")


# -- UWF's shared-secret HMAC (ServiceNow, Freshdesk, any sender that can compute one) ----------
# Modelled on Stripe's: `X-UWF-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
# "<t>.<body>")>`. Several v1= entries may be sent while a secret is being rotated; one match
# suffices. docs/webhooks.md documents it for senders.

_HMAC_PART = re.compile(r"^\s*(t|v1)=([0-9A-Za-z]{1,128})\s*$")


def sign_hmac(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-UWF-Signature` header value a sender computes for `body` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_hmac(secret: str, *, body: bytes, header: str | None, now: float) -> None:
    """Raise `SignatureError` unless `header` signs exactly this body within the window."""
    if not header:
        raise SignatureError("missing X-UWF-Signature header (t=<unix>,v1=<hex hmac>)")
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        match = _HMAC_PART.match(part)
        if match is None:
            raise SignatureError("X-UWF-Signature is not of the form t=<unix>,v1=<hex hmac>")
        if match.group(1) == "t":
            timestamp = match.group(2)
        else:
            candidates.append(match.group(2))
    if timestamp is None or not timestamp.isdigit() or not candidates:
        raise SignatureError("X-UWF-Signature needs t=<unix seconds> and at least one v1=")
    _check_window(int(timestamp), now)
    expected = sign_hmac(secret, body, int(timestamp)).split("v1=", 1)[1]
    # Compare with every candidate, not stopping at the first match: constant work per header.
    matches = [_equal(expected, candidate.lower()) for candidate in candidates]
    if not any(matches):
        raise SignatureError("X-UWF-Signature does not match the request")


# -- Salesforce outbound messages ---------------------------------------------------------------
# Outbound messages cannot be signed by a shared secret (Salesforce only offers a client
# certificate for mutual TLS, which a proxy in front of UWF can require). UWF checks what the
# sender can be configured to carry: a secret token in the endpoint URL (`?token=`, set in the
# outbound message's Endpoint URL) and the organisation id inside the message. There is no
# timestamp to bound, so the replay defence is the notification id alone.
# https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html


def verify_salesforce_token(token: str, *, given_token: str | None) -> None:
    """Raise `SignatureError` unless the endpoint URL's `?token=` is the shared token."""
    if not given_token:
        raise SignatureError("missing token: the endpoint URL must end in ?token=<secret>")
    if not _equal(token, given_token):
        raise SignatureError("the token does not match")


def verify_salesforce_organization(organization_id: str, *, given: str | None) -> None:
    """Raise `SignatureError` unless the message comes from the configured org."""
    # An 18-character id is the 15-character one plus a case-safe checksum; compare the 15.
    if not given or not _equal(organization_id[:15], given[:15]):
        raise SignatureError("the message comes from another Salesforce organisation")
