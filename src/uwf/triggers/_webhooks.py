"""`POST /v1/webhooks/{tenant}/{connection}`: CRM events in, workflow executions out.

Not authenticated with API keys: each delivery proves itself with its sender's signature
(see `_signatures`). The order of checks is fixed so that answers leak as little as possible:

1. 404 unless the tenant's metadata binds a trigger to this connection (the same answer for an
   unknown tenant, an unknown connection and a connection without triggers);
2. 413 when the body exceeds `MAX_BODY_BYTES` (read no further);
3. 401 unless the signature (or token) and the replay window check out;
4. 400 / 422 when the verified body holds no readable event, or an event maps to input the
   workflow refuses — nothing is stored then, for any event of the delivery;
5. 202 with the started executions; 200 when every event was a duplicate or matched no trigger.
   Salesforce gets the SOAP `Ack` it waits for instead (200).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from uwf.api import ProblemError, accept_action
from uwf.auth import env_or_sandbox_resolver
from uwf.errors import IdempotencyKeyReusedError, UwfError
from uwf.metadata import MetadataBundle, TriggerSpec
from uwf.sandboxes import sandbox_credentials
from uwf.service import Service
from uwf.store import AuditEntry
from uwf.triggers._binding import Event, Plan, events_from_json, idempotency_key, plan_event
from uwf.triggers._salesforce import ACK, OutboundMessageError, parse_outbound_message
from uwf.triggers._signatures import (
    SignatureError,
    verify_hmac,
    verify_hubspot_v3,
    verify_salesforce_organization,
    verify_salesforce_token,
    verify_zendesk,
)

__all__ = ["MAX_BODY_BYTES", "WebhookEventReceipt", "WebhookReceipt", "router"]

log = structlog.get_logger("uwf.triggers")
router = APIRouter(tags=["webhooks"])

# Salesforce's largest outbound message (100 notifications) and HubSpot's batches (100 events)
# stay far below this; anything larger is not a CRM event.
MAX_BODY_BYTES = 1024 * 1024


class WebhookEventReceipt(BaseModel):
    event_id: str
    outcome: Literal["started", "duplicate", "ignored"] = Field(
        description="started: a new execution; duplicate: this event id was delivered before "
        "and `execution_id` is the execution it started; ignored: no trigger's condition held"
    )
    trigger: str | None = None
    workflow: str | None = None
    execution_id: str | None = None


class WebhookReceipt(BaseModel):
    tenant: str
    connection: str
    execution_id: str | None = Field(
        default=None, description="The execution, when the delivery concerned exactly one"
    )
    events: list[WebhookEventReceipt]


def _not_found() -> ProblemError:
    # One answer for every miss, so the endpoint does not tell which tenants exist.
    return ProblemError(404, "not-found", "Not found", "no webhook endpoint at this address")


def _unauthorized(reason: str) -> ProblemError:
    return ProblemError(401, "invalid-signature", "Invalid signature", reason)


# What each scheme's sender always sends; a delivery without it cannot be genuine.
_SIGNED_BY = {
    "hubspot_v3": ("x-hubspot-signature-v3", "x-hubspot-request-timestamp"),
    "zendesk": ("x-zendesk-webhook-signature", "x-zendesk-webhook-signature-timestamp"),
    "hmac": ("x-uwf-signature",),
}


def _check_signed(trigger: TriggerSpec, request: Request, token: str | None) -> None:
    """Refuse an unsigned delivery before the secret is needed (an unset secret answers 503)."""
    if trigger.scheme == "salesforce_outbound":
        missing = [] if token else ["the `token` query parameter"]
    else:
        missing = [f"`{h}`" for h in _SIGNED_BY[trigger.scheme] if not request.headers.get(h)]
    if missing:
        raise _unauthorized(f"the delivery is not signed: {', '.join(missing)} missing")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


def _too_large() -> ProblemError:
    return ProblemError(
        413,
        "payload-too-large",
        "Payload too large",
        f"a webhook delivery may be at most {MAX_BODY_BYTES} bytes",
    )


def _signed_uri(request: Request, service: Service) -> str:
    """The URL HubSpot called: the public URL when UWF sits behind a proxy, else our own."""
    path = request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    base = service.settings.public_url
    if base:
        return base.rstrip("/") + path + (f"?{query}" if query else "")
    return str(request.url)


def _secret(service: Service, trigger: TriggerSpec) -> str:
    resolve = env_or_sandbox_resolver(lambda crm: sandbox_credentials(service.settings.home, crm))
    try:
        return resolve(trigger.secret)
    except (UwfError, LookupError) as exc:
        # The operator's problem, not the sender's: say so in the log, not to the caller.
        log.error(
            "webhook secret unavailable",
            tenant=trigger.tenant,
            trigger=trigger.name,
            reason=str(exc),
        )
        raise ProblemError(
            503,
            "webhook-unavailable",
            "Webhook unavailable",
            "this webhook endpoint is not configured to verify deliveries yet",
            headers={"Retry-After": "60"},
        ) from None


def _verify_and_read(
    trigger: TriggerSpec,
    secret: str,
    request: Request,
    service: Service,
    body: bytes,
    token: str | None,
) -> list[Event]:
    """Verify the delivery the way the endpoint's scheme says and return its events."""
    headers = request.headers
    now = time.time()
    try:
        if trigger.scheme == "salesforce_outbound":
            assert trigger.organization_id is not None
            verify_salesforce_token(secret, given_token=token)
            try:
                message = parse_outbound_message(body)
            except OutboundMessageError as exc:
                raise _invalid_event(str(exc), status=400) from None
            verify_salesforce_organization(trigger.organization_id, given=message.organization_id)
            return [Event(n["id"], n) for n in message.notifications]
        if trigger.scheme == "hubspot_v3":
            verify_hubspot_v3(
                secret,
                method=request.method,
                uri=_signed_uri(request, service),
                body=body,
                signature=headers.get("x-hubspot-signature-v3"),
                timestamp=headers.get("x-hubspot-request-timestamp"),
                now=now,
            )
        elif trigger.scheme == "zendesk":
            verify_zendesk(
                secret,
                body=body,
                signature=headers.get("x-zendesk-webhook-signature"),
                timestamp=headers.get("x-zendesk-webhook-signature-timestamp"),
                now=now,
            )
        else:
            verify_hmac(secret, body=body, header=headers.get("x-uwf-signature"), now=now)
    except SignatureError as exc:
        log.warning(
            "webhook refused",
            tenant=trigger.tenant,
            connection=trigger.connection,
            scheme=trigger.scheme,
            reason=str(exc),
        )
        raise _unauthorized(str(exc)) from None
    events, problem = events_from_json(trigger.scheme, body, headers)
    if problem is not None:
        raise _invalid_event(problem, status=400 if "JSON" in problem else 422)
    return events


def _invalid_event(detail: str, *, status: int = 422) -> ProblemError:
    return ProblemError(status, "invalid-event", "Invalid event", detail)


def _plan(
    bundle: MetadataBundle, tenant: str, triggers: list[TriggerSpec], events: list[Event]
) -> list[Plan]:
    workflows = {t.workflow: bundle.workflow(tenant, t.workflow) for t in triggers}
    if any(w is None for w in workflows.values()):  # metadata checks make this unreachable
        raise _not_found()
    value_maps = bundle.value_maps_for(tenant)
    known = {name: wf for name, wf in workflows.items() if wf is not None}
    return [plan_event(event, triggers, known, value_maps) for event in events]


@router.post(
    "/v1/webhooks/{tenant}/{connection}",
    response_model=WebhookReceipt,
    status_code=202,
    responses={
        200: {
            "model": WebhookReceipt,
            "description": "Every event was a duplicate or matched no trigger; Salesforce "
            "outbound messages get the SOAP `notificationsResponse` (Ack true) instead",
            "content": {"text/xml": {"schema": {"type": "string"}}},
        },
        401: {"description": "Missing or wrong signature, or a timestamp outside the window"},
        404: {"description": "No trigger is bound to this tenant and connection"},
        413: {"description": "The body is larger than 1 MiB"},
        422: {"description": "An event maps to input the workflow refuses; nothing was stored"},
    },
)
async def receive_webhook(
    tenant: str,
    connection: str,
    request: Request,
    response: Response,
    token: Annotated[
        str | None, Query(max_length=256, description="salesforce_outbound: the shared token")
    ] = None,
) -> Any:
    """Verify a CRM's webhook delivery and start the workflow its tenant's triggers bind to it.

    See docs/webhooks.md for each sender's scheme and the `kind: trigger` metadata.
    """
    service: Service = request.app.state.service
    active = await service.store.active_metadata()
    if active is None or tenant not in active[1].tenants:
        raise _not_found()
    _, bundle = active
    triggers = bundle.triggers_for(tenant, connection)
    if not triggers:
        raise _not_found()
    first = triggers[0]
    body = await _read_body(request)
    _check_signed(first, request, token)
    secret = _secret(service, first)
    events = _verify_and_read(first, secret, request, service, body, token)
    plans = _plan(bundle, tenant, triggers, events)  # every event checked before any is stored
    receipts: list[WebhookEventReceipt] = []
    started = False
    for plan in plans:
        if plan.trigger is None or plan.input is None:
            receipts.append(WebhookEventReceipt(event_id=plan.event.id, outcome="ignored"))
            continue
        key = idempotency_key(connection, plan.event.id)
        try:
            execution, created = await accept_action(
                service.store,
                tenant,
                plan.trigger.workflow,
                plan.input,
                key,
                audit=AuditEntry(
                    actor=f"webhook:{connection}",
                    actor_type="webhook",
                    action="action.accepted",
                    tenant=tenant,
                    request_id=getattr(request.state, "request_id", None),
                    details={"event_id": plan.event.id, "trigger": plan.trigger.name},
                ),
                vault=service.vault,
            )
        except IdempotencyKeyReusedError as exc:
            # The same event id with other content (the metadata changed between deliveries,
            # or a sender re-sent an edited event): still one event, so still one execution.
            found = await service.store.get_execution(str(exc.context["execution_id"]))
            if found is None:
                raise
            execution, created = found, False
        started = started or created
        receipts.append(
            WebhookEventReceipt(
                event_id=plan.event.id,
                outcome="started" if created else "duplicate",
                trigger=plan.trigger.name,
                workflow=plan.trigger.workflow,
                execution_id=execution.id,
            )
        )
    if started and service.executor is not None:
        service.executor.wake()
    executions = [r.execution_id for r in receipts if r.execution_id]
    log.info(
        "webhook accepted",
        tenant=tenant,
        connection=connection,
        events=len(receipts),
        started=sum(r.outcome == "started" for r in receipts),
    )
    if first.scheme == "salesforce_outbound":
        return Response(
            ACK,
            status_code=200,
            media_type="text/xml; charset=utf-8",
            headers={"X-UWF-Executions": ",".join(executions)} if executions else None,
        )
    response.status_code = 202 if started else 200
    single = executions[0] if len(receipts) == 1 and executions else None
    if single is not None:
        response.headers["Location"] = f"/v1/tenants/{tenant}/executions/{single}"
    return WebhookReceipt(
        tenant=tenant, connection=connection, execution_id=single, events=receipts
    )
