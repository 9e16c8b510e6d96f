"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "dead", "cancelled"]


class ActionRequest(BaseModel):
    """Ask for a workflow action."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflow": "escalate_case",
                    "input": {"case_id": 123, "priority": "P1", "reason": "VIP customer"},
                }
            ]
        },
    )

    workflow: str = Field(min_length=1, max_length=63)
    input: dict[str, Any] = Field(default_factory=dict)


class StepView(BaseModel):
    id: str
    type: str
    status: str
    attempts: int
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    output: Any
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None


class ExecutionSummary(BaseModel):
    id: str
    tenant: str
    workflow: str
    workflow_version: int
    status: ExecutionStatus
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ExecutionView(ExecutionSummary):
    cancel_requested: bool
    replay_of: str | None
    input: dict[str, Any]
    output: Any
    steps: list[StepView]
    updated_at: datetime


class ExecutionPage(BaseModel):
    items: list[ExecutionSummary]
    next_cursor: str | None


class ReplayRequest(BaseModel):
    """Replay a failed, dead or cancelled execution as a new one."""

    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(
        default=None,
        description="Run this step and every later one again; default: resume, keeping every "
        "step that succeeded",
    )
    metadata_version: Literal["original", "current"] = "original"


class WorkflowView(BaseModel):
    name: str
    description: str | None
    workflow_version: int
    input_schema: dict[str, Any]
    steps: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    metadata_version: int | None
    worker: Literal["running", "disabled"]


class ConnectionView(BaseModel):
    name: str
    connector: str
    base_url: str
    auth_type: str
    state: Literal["ok", "needs_reauth"]
    reason: str | None


class ConnectionTest(BaseModel):
    connection: str
    tenant: str
    connector: str
    base_url: str | None = None
    ok: bool
    latency_ms: float | None
    status: int | None
    rate_limit: dict[str, str | None] | None
    problem: str | None


class PicklistOptionView(BaseModel):
    value: Any
    label: str | None


class FieldView(BaseModel):
    """One field of a CRM object, as the CRM describes it."""

    name: str = Field(description="The CRM's own (writable) name")
    canonical: str | None = Field(description="The canonical name, where the spec maps one")
    label: str | None
    type: str | None
    required: bool | None
    read_only: bool | None
    options: list[PicklistOptionView] = Field(description="Allowed values of a picklist")


class ObjectDescriptionView(BaseModel):
    """An object's live field metadata, read from the CRM through the connector."""

    connection: str
    connector: str
    object: str
    native_name: str | None
    fields: list[FieldView]


class DryRunView(BaseModel):
    """What an action would do: reads were sent, writes were not; nothing was stored."""

    dry_run: Literal[True]
    tenant: str
    workflow: str
    metadata_version: int
    status: str = Field(description="How the evaluation ended: succeeded, failed, …")
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    steps: list[dict[str, Any]] = Field(
        description="Each step: status, request (would-be, for writes), `diff` for updates"
    )
    requests: list[dict[str, Any]] = Field(
        description="Every request in order; `sent: false` for the writes that were not sent"
    )
