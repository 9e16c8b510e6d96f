"""Triggers: CRM webhooks that start workflows (DESIGN.md: inbound webhooks with signatures).

`webhook_router` serves `POST /v1/webhooks/{tenant}/{connection}`; the `sign_*` functions
compute what each sender sends, for tests and for tools that post events.
"""

from uwf.triggers._binding import idempotency_key
from uwf.triggers._salesforce import ACK, OutboundMessageError, parse_outbound_message
from uwf.triggers._signatures import (
    CLOCK_SKEW_SECONDS,
    REPLAY_WINDOW_SECONDS,
    SignatureError,
    hubspot_v3_uri,
    sign_hmac,
    sign_hubspot_v3,
    sign_zendesk,
    verify_hmac,
    verify_hubspot_v3,
    verify_salesforce_organization,
    verify_salesforce_token,
    verify_zendesk,
)
from uwf.triggers._webhooks import MAX_BODY_BYTES, WebhookEventReceipt, WebhookReceipt
from uwf.triggers._webhooks import router as webhook_router

__all__ = [
    "ACK",
    "CLOCK_SKEW_SECONDS",
    "MAX_BODY_BYTES",
    "REPLAY_WINDOW_SECONDS",
    "OutboundMessageError",
    "SignatureError",
    "WebhookEventReceipt",
    "WebhookReceipt",
    "hubspot_v3_uri",
    "idempotency_key",
    "parse_outbound_message",
    "sign_hmac",
    "sign_hubspot_v3",
    "sign_zendesk",
    "verify_hmac",
    "verify_hubspot_v3",
    "verify_salesforce_organization",
    "verify_salesforce_token",
    "verify_zendesk",
    "webhook_router",
]
