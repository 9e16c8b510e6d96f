"""Pydantic models of every metadata document: tenant, connection, workflow, value map.

A metadata directory holds YAML documents, each with a `kind`. Together they form a
`MetadataBundle`; applying one stores an immutable, numbered version in the Pipe DB.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from uwf.connectors import ConnectorSpec, FieldSpec, LimitsSpec

__all__ = [
    "ActionStep",
    "AddCommentStep",
    "ApiKeyAuth",
    "ApiTokenAuth",
    "AssignStep",
    "AuthSpec",
    "BasicAuth",
    "BearerAuth",
    "CallWorkflowStep",
    "ConnectionSpec",
    "ConnectorDocument",
    "CreateRecordStep",
    "Document",
    "ForEachStep",
    "JwtBearerAuth",
    "LocalValueMapSpec",
    "LookupStep",
    "OAuth2ClientCredentialsAuth",
    "OAuth2PasswordAuth",
    "OAuth2RefreshTokenAuth",
    "RetrySpec",
    "SecretRef",
    "StepSpec",
    "SwitchCase",
    "SwitchStep",
    "TenantSpec",
    "TimeoutsSpec",
    "TriggerSpec",
    "UpdateRecordStep",
    "ValueMapSpec",
    "WorkflowSpec",
]

TENANT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CONNECTION_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
WORKFLOW_NAME = r"^[a-z][a-z0-9_]{0,62}$"
STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"
CANONICAL_NAME = r"^[a-z][a-z0-9_]{0,62}$"
# Per object (`case`, `account`, …), canonical field name → how this account stores it.
ObjectFields = dict[
    Annotated[str, StringConstraints(pattern=CANONICAL_NAME)],
    dict[Annotated[str, StringConstraints(pattern=CANONICAL_NAME)], FieldSpec],
]
LOOP_VARIABLE = r"^[a-z][a-z0-9_]{0,30}$"
MAX_FOR_EACH_ITEMS = 100
"""The hard cap on `for_each.max_items`: a loop never sends more than this many rounds."""
MAX_STEP_KEY_LENGTH = 63
"""The longest ledger key (`loop[99].note`, `sub.branch.case0.note`) the step ledger stores."""
CONTROL_STEP_TYPES = frozenset({"switch", "for_each", "call_workflow"})


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Doc):
    """Where a secret comes from. Secrets are never written in metadata itself.

    Example:
        `{env: ACME_ZENDESK_TOKEN}`; `{stored: zendesk_token}` (set with `uwf secrets set`,
        kept encrypted per tenant); `{vault: secret/data/acme/zendesk, field: token}`
        (HashiCorp Vault KV v2); for the built-in sandboxes `{sandbox: zendesk, field:
        api_token}`.
    """

    env: str | None = Field(default=None, description="Name of an environment variable")
    sandbox: str | None = Field(default=None, description="A built-in sandbox's dev credentials")
    stored: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="A secret stored encrypted for the connection's tenant (`uwf secrets set`)",
    )
    vault: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$",
        description="A HashiCorp Vault KV v2 API path, e.g. `secret/data/acme/zendesk`",
    )
    field: str | None = Field(
        default=None, description="With `sandbox` or `vault`: which credential / key"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [s for s in (self.env, self.sandbox, self.stored, self.vault) if s is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `env`, `stored`, `vault` or `sandbox`")
        if (self.sandbox is not None or self.vault is not None) and self.field is None:
            raise ValueError("`sandbox` and `vault` need `field` (e.g. api_token)")
        return self

    @property
    def dynamic(self) -> bool:
        """Looked up at run time in the Pipe DB or Vault (and so may change)."""
        return self.stored is not None or self.vault is not None

    def describe(self) -> str:
        """Where the secret lives, without it: for error messages."""
        if self.stored is not None:
            return f"stored secret '{self.stored}'"
        if self.vault is not None:
            return f"Vault secret {self.vault} (field '{self.field}')"
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"sandbox '{self.sandbox}' credential '{self.field}'"


class ApiTokenAuth(_Doc):
    """An agent's email and API token (Zendesk: Basic `email/token:api_token`)."""

    type: Literal["api_token"]
    email: str
    token: SecretRef


class ApiKeyAuth(_Doc):
    """One secret key, sent the way the connector says (a header such as `X-Api-Key`)."""

    type: Literal["api_key"]
    key: SecretRef


class BasicAuth(_Doc):
    type: Literal["basic"]
    username: str
    password: SecretRef


class BearerAuth(_Doc):
    type: Literal["bearer"]
    token: SecretRef


class _OAuth2(_Doc):
    token_url: str | None = Field(
        default=None,
        description="The token endpoint; default: the connector's. May use ${sandbox:…}/${env:…}",
    )
    client_id: str | SecretRef = Field(
        description="The client (app) id; a secret reference where it is not public"
    )
    scope: str | None = None


class OAuth2ClientCredentialsAuth(_OAuth2):
    """OAuth 2.0 client credentials (Dynamics 365 / Entra ID, HubSpot, Salesforce)."""

    type: Literal["oauth2_client_credentials"]
    client_secret: SecretRef


class OAuth2RefreshTokenAuth(_OAuth2):
    """OAuth 2.0 refresh token; a rotated refresh token is kept (encrypted) and used next."""

    type: Literal["oauth2_refresh_token"]
    client_secret: SecretRef | None = None
    refresh_token: SecretRef


class OAuth2PasswordAuth(_OAuth2):
    """OAuth 2.0 resource-owner password grant (ServiceNow's `oauth_token.do`)."""

    type: Literal["oauth2_password"]
    client_secret: SecretRef
    username: str
    password: SecretRef


class JwtBearerAuth(_OAuth2):
    """OAuth 2.0 JWT bearer (RFC 7523), as Salesforce's connected apps use it."""

    type: Literal["jwt_bearer"]
    username: str = Field(description="The `sub` claim: the user to act as")
    audience: str | None = Field(default=None, description="The `aud` claim")
    private_key: SecretRef = Field(description="PEM RSA private key that signs the assertion")


AuthSpec = Annotated[
    ApiTokenAuth
    | ApiKeyAuth
    | BasicAuth
    | BearerAuth
    | OAuth2ClientCredentialsAuth
    | OAuth2RefreshTokenAuth
    | OAuth2PasswordAuth
    | JwtBearerAuth,
    Field(discriminator="type"),
]
OAUTH2_TYPES = frozenset(
    {"oauth2_client_credentials", "oauth2_refresh_token", "oauth2_password", "jwt_bearer"}
)


class RetrySpec(_Doc):
    """How often and how patiently a step is retried after a retryable error."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    initial_delay_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_delay_seconds: float = Field(default=300.0, ge=0, le=86400)


class TimeoutsSpec(_Doc):
    """How long to wait for a CRM, per request. The total is the connection's `timeout_seconds`
    (or a step's own)."""

    connect_seconds: float = Field(
        default=10.0, gt=0, le=600, description="To open a connection (then: retried, not sent)"
    )
    read_seconds: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Longest silence while reading the answer; default: only the total applies",
    )


class TenantSpec(_Doc):
    kind: Literal["tenant"]
    name: str = Field(pattern=TENANT_NAME)
    display_name: str | None = None
    description: str | None = None


class ConnectionSpec(_Doc):
    """A tenant's account on one CRM."""

    kind: Literal["connection"]
    name: str = Field(pattern=CONNECTION_NAME)
    tenant: str
    connector: str = Field(description="Connector id, e.g. zendesk")
    base_url: str = Field(
        description="The CRM's base URL; `${sandbox:zendesk}` names a built-in sandbox, "
        "`${env:NAME}` an environment variable"
    )
    auth: AuthSpec
    config: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Longest a request may take, all in"
    )
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    limits: LimitsSpec | None = Field(
        default=None, description="This account's budget; default: the connector's"
    )
    custom_fields: ObjectFields = Field(
        default_factory=dict,
        description="This account's own fields, per object: canonical name → native name, "
        "type and values, e.g. `case: {escalated: {native: SL_Escalated__c, type: boolean}}`",
    )
    field_mappings: ObjectFields = Field(
        default_factory=dict,
        description="Per object, canonical fields this account maps differently from the "
        "connector (another native field, other picklist values); replaces the connector's",
    )
    lookup_cache_ttl_seconds: float = Field(
        default=0,
        ge=0,
        le=86400,
        description="How long a lookup's answer is reused for the same criteria (0: never); "
        "a lookup step's `cache_ttl_seconds` overrides it",
    )


class ValueMapSpec(_Doc):
    """A translation table, e.g. P1..P4 → urgent/high/normal/low."""

    kind: Literal["value_map"]
    name: str = Field(pattern=WORKFLOW_NAME)
    tenant: str | None = Field(default=None, description="Omit for a map every tenant may use")
    values: dict[str, Any]
    default: Any = None
    on_unmapped: Literal["error", "passthrough", "default"] = "error"


class _BaseStep(_Doc):
    id: str = Field(pattern=STEP_ID)
    when: str | None = Field(default=None, description="JMESPath; the step is skipped when false")
    on_failure: list[StepSpec] | None = Field(
        default=None,
        description="Compensation steps run when this step fails (after its retries), with "
        "`error`; then the execution still fails (and the workflow's `on_failure` runs)",
    )


class _Step(_BaseStep):
    connection: str | None = Field(default=None, description="Default: the workflow's")
    output: dict[str, str] | None = Field(
        default=None, description="Named JMESPath extractions over the step's result"
    )
    retry: RetrySpec | None = None
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="This step's total per request; default: the connection's",
    )


class LookupStep(_Step):
    """Find one record, e.g. a user by email; outputs the record."""

    type: Literal["lookup"]
    object: str
    criteria: dict[str, Any]
    required: bool = Field(default=True, description="Fail when nothing matches")
    default: Any = Field(
        default=None,
        description="The step's result when nothing matches (a value or template), "
        "instead of failing",
    )
    cache_ttl_seconds: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Reuse the answer for the same criteria this long (0: never); "
        "default: the connection's `lookup_cache_ttl_seconds`",
    )


class UpdateRecordStep(_Step):
    type: Literal["update_record"]
    object: str
    record_id: Any
    fields: dict[str, Any]


class CreateRecordStep(_Step):
    type: Literal["create_record"]
    object: str
    fields: dict[str, Any]


class AddCommentStep(_Step):
    type: Literal["add_comment"]
    object: str
    record_id: Any
    body: str
    public: bool = False


class AssignStep(_Step):
    type: Literal["assign"]
    object: str
    record_id: Any
    owner_id: Any


class SwitchCase(_Doc):
    """One branch of a `switch`: its steps run when `when` is the first true condition."""

    when: str = Field(description="JMESPath; the first case whose condition is true runs")
    steps: list[StepSpec] = Field(min_length=1)


class SwitchStep(_BaseStep):
    """Run the steps of the first case whose `when` is true, else the `default` steps."""

    type: Literal["switch"]
    cases: list[SwitchCase] = Field(min_length=1)
    default: list[StepSpec] | None = Field(
        default=None, description="Steps to run when no case matches; without it, none"
    )


class ForEachStep(_BaseStep):
    """Run `steps` once per element of a list, in order; bounded by `max_items`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    type: Literal["for_each"]
    items: str = Field(description="JMESPath giving the list to iterate (null: no items)")
    as_: str = Field(
        default="item",
        alias="as",
        pattern=LOOP_VARIABLE,
        description="The name the current element has in expressions (`index` is its position)",
    )
    max_items: int = Field(
        ge=1,
        le=MAX_FOR_EACH_ITEMS,
        description=f"More items than this fail the execution; at most {MAX_FOR_EACH_ITEMS}",
    )
    steps: list[StepSpec] = Field(min_length=1)


class CallWorkflowStep(_BaseStep):
    """Run another workflow of the same tenant inline; its output is this step's output."""

    type: Literal["call_workflow"]
    workflow: str = Field(pattern=WORKFLOW_NAME)
    input: dict[str, Any] = Field(
        default_factory=dict, description="The called workflow's input; templates allowed"
    )


StepSpec = Annotated[
    LookupStep
    | UpdateRecordStep
    | CreateRecordStep
    | AddCommentStep
    | AssignStep
    | SwitchStep
    | ForEachStep
    | CallWorkflowStep,
    Field(discriminator="type"),
]
ActionStep = LookupStep | UpdateRecordStep | CreateRecordStep | AddCommentStep | AssignStep
"""The steps that call a CRM; the others (`switch`, `for_each`, `call_workflow`) hold steps."""


class LocalValueMapSpec(_Doc):
    """A value map that only one workflow uses, declared inside it."""

    values: dict[str, Any]
    default: Any = None
    on_unmapped: Literal["error", "passthrough", "default"] = "error"


class WorkflowSpec(_Doc):
    """A business action: its input schema and the steps that carry it out."""

    kind: Literal["workflow"]
    name: str = Field(pattern=WORKFLOW_NAME)
    tenant: str
    description: str | None = None
    connection: str
    input_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) of the input")
    steps: list[StepSpec] = Field(min_length=1)
    output: dict[str, Any] | None = Field(
        default=None, description="The execution's output; default: each step's output"
    )
    on_failure: list[StepSpec] | None = Field(
        default=None,
        description="Compensation steps run when the execution fails; `error` holds the reason",
    )
    value_maps: dict[str, LocalValueMapSpec] | None = Field(
        default=None, description="Value maps only this workflow uses; they win over shared ones"
    )


class ConnectorDocument(ConnectorSpec):
    """A connector spec brought by metadata: a CRM with no built-in connector, as data alone."""

    kind: Literal["connector"]


# -- triggers: inbound webhooks that start workflows (docs/webhooks.md) ------------------------


class TriggerSpec(_Doc):
    """An inbound webhook that starts a workflow when a verified event arrives.

    Events reach `POST /v1/webhooks/{tenant}/{connection}`. They are checked the way `scheme`
    says, with `secret`; the first trigger of that endpoint (by name) whose `event` condition
    holds starts `workflow` with `input`, evaluated over `{event: …}`.

    Example:
        `{kind: trigger, name: vip_escalation, tenant: acme, connection: acme-zendesk,
        scheme: zendesk, secret: {env: ACME_ZENDESK_WEBHOOK_SECRET}, workflow: escalate_case,
        input: {case_id: "{{ event.detail.id }}", priority: P1}}`
    """

    kind: Literal["trigger"]
    name: str = Field(pattern=WORKFLOW_NAME)
    tenant: str
    description: str | None = None
    connection: str = Field(
        description="The tenant's connection whose CRM sends the events; the endpoint is "
        "/v1/webhooks/<tenant>/<connection>"
    )
    scheme: Literal["hubspot_v3", "zendesk", "hmac", "salesforce_outbound"] = Field(
        description="How deliveries are verified: HubSpot signature v3, Zendesk webhook "
        "signature, UWF's shared-secret HMAC (X-UWF-Signature), or a Salesforce outbound "
        "message's organisation id plus a shared token"
    )
    secret: SecretRef = Field(
        description="HubSpot: the app's client secret; Zendesk: the webhook's signing secret; "
        "hmac: the shared secret; salesforce_outbound: the token in the endpoint URL"
    )
    organization_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$",
        description="salesforce_outbound only: the org id (00D…) messages must come from",
    )
    event: str | None = Field(
        default=None,
        description="JMESPath condition over `event`; events for which it is false are ignored",
    )
    workflow: str = Field(description="The tenant's workflow the event starts")
    input: dict[str, Any] = Field(
        description="The workflow's input: templates over `event`, e.g. "
        '`case_id: "{{ event.detail.id }}"`; a value that comes out null is left out'
    )

    @model_validator(mode="after")
    def _organization_for_salesforce(self) -> TriggerSpec:
        if (self.scheme == "salesforce_outbound") != (self.organization_id is not None):
            raise ValueError(
                "`organization_id` is required with scheme salesforce_outbound, and only there"
            )
        return self


Document = Annotated[
    TenantSpec | ConnectionSpec | WorkflowSpec | ValueMapSpec | ConnectorDocument | TriggerSpec,
    Field(discriminator="kind"),
]

# The operation each step type runs on its connector.
STEP_OPERATION: dict[str, str] = {
    "lookup": "lookup",
    "update_record": "update",
    "create_record": "create",
    "add_comment": "add_comment",
    "assign": "assign",
}

for _model in (
    LookupStep,
    UpdateRecordStep,
    CreateRecordStep,
    AddCommentStep,
    AssignStep,
    SwitchCase,
    SwitchStep,
    ForEachStep,
    CallWorkflowStep,
    WorkflowSpec,
):
    _model.model_rebuild()
