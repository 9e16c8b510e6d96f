"""From a verified delivery to the executions it starts: events, their ids, triggers, input.

A delivery carries one event (Zendesk, generic HMAC) or several (a HubSpot batch, a Salesforce
outbound message with up to 100 notifications). Each event has the id its sender keeps across
retries; the idempotency key `webhook:<connection>:<event id>` makes a re-delivery return the
execution the first delivery started instead of starting another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import structlog

from uwf.errors import ExpressionError, InputValidationError
from uwf.mapping import (
    CompiledValue,
    Expression,
    ValueMap,
    compile_expression,
    compile_value,
    is_truthy,
)
from uwf.metadata import TriggerSpec, WorkflowSpec

__all__ = ["Event", "Plan", "events_from_json", "idempotency_key", "plan_event"]

log = structlog.get_logger("uwf.triggers")
_MAX_EVENT_ID = 200  # longer ids are hashed so the key fits the 255-character column


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a delivery: the sender's id for it and its data (`event` in expressions)."""

    id: str
    data: Any


@dataclass(frozen=True, slots=True)
class Plan:
    """What one event will do: start `trigger.workflow` with `input` (or nothing: ignored)."""

    event: Event
    trigger: TriggerSpec | None
    input: dict[str, Any] | None


def idempotency_key(connection: str, event_id: str) -> str:
    """`webhook:<connection>:<event id>`; an overlong id is replaced by its SHA-256."""
    if len(event_id) > _MAX_EVENT_ID:
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    return f"webhook:{connection}:{event_id}"


def _event_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value).strip():
        return str(value).strip()
    return None


def events_from_json(
    scheme: str, body: bytes, headers: Mapping[str, str]
) -> tuple[list[Event], str | None]:
    """The events of a JSON delivery, or ([], why not) when they cannot be read."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return [], f"the body is not valid JSON: {exc}"
    if scheme == "hubspot_v3":
        # The webhooks API sends an array of events; a workflow's webhook action one object.
        items = data if isinstance(data, list) else [data]
        events = []
        for index, item in enumerate(items):
            event_id = _event_id(item.get("eventId")) if isinstance(item, dict) else None
            if event_id is None:
                return [], f"event [{index}] has no eventId"
            events.append(Event(event_id, item))
        return events, None if events else "the body holds no event"
    if not isinstance(data, dict):
        return [], "the body must be a JSON object"
    if scheme == "zendesk":
        # Event subscriptions carry the event's id in the body; a trigger's or automation's
        # webhook has a body of the admin's making, so its invocation id names the event.
        event_id = _event_id(data.get("id")) or _event_id(
            headers.get("x-zendesk-webhook-invocation-id")
        )
        missing = "no event id: neither the body's `id` nor X-Zendesk-Webhook-Invocation-Id"
    else:
        event_id = _event_id(headers.get("x-uwf-event-id")) or _event_id(data.get("id"))
        missing = "no event id: send X-UWF-Event-Id (or an `id` in the body)"
    if event_id is None:
        return [], missing
    return [Event(event_id, data)], None


@lru_cache(maxsize=1024)
def _condition(source: str) -> Expression:
    return compile_expression(source)


@lru_cache(maxsize=1024)
def _input(canonical: str) -> CompiledValue:
    return compile_value(json.loads(canonical))


@lru_cache(maxsize=256)
def _validator(schema: str) -> Any:
    parsed = json.loads(schema)
    cls = jsonschema.validators.validator_for(parsed)
    return cls(parsed, format_checker=cls.FORMAT_CHECKER)


def plan_event(
    event: Event,
    triggers: Sequence[TriggerSpec],
    workflows: Mapping[str, WorkflowSpec],
    value_maps: Mapping[str, ValueMap],
) -> Plan:
    """Pick the first trigger whose condition holds; map and validate the workflow's input.

    Raises:
        InputValidationError: the input the event maps to breaks the workflow's schema (or
            an input expression fails on it): the delivery is refused, nothing is stored.
    """
    context = {"event": event.data}
    for trigger in triggers:
        if trigger.event is not None:
            try:
                matched = is_truthy(_condition(trigger.event).evaluate(context, value_maps))
            except ExpressionError as exc:
                # A condition written for one event type may not apply to another: no match.
                log.warning("trigger condition failed", trigger=trigger.name, error=exc.message)
                matched = False
            if not matched:
                continue
        compiled = _input(json.dumps(trigger.input, sort_keys=True))
        try:
            mapped = compiled.evaluate(context, value_maps)
        except ExpressionError as exc:
            raise InputValidationError(
                f"trigger '{trigger.name}' could not map event {event.id}: {exc.message}",
                errors=[{"path": "/input", "message": exc.message}],
            ) from None
        data = {k: v for k, v in mapped.items() if v is not None}
        workflow = workflows[trigger.workflow]
        validator = _validator(json.dumps(workflow.input_schema, sort_keys=True))
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            listed = [
                {
                    "path": "/input" + "".join(f"/{p}" for p in e.absolute_path),
                    "message": e.message,
                }
                for e in errors
            ]
            detail = "; ".join(f"{e['path']}: {e['message']}" for e in listed)
            raise InputValidationError(
                f"event {event.id} maps to input that workflow '{workflow.name}' refuses "
                f"(trigger '{trigger.name}'): {detail}",
                errors=listed,
            )
        return Plan(event, trigger, data)
    return Plan(event, None, None)
