"""The declarative connector spec: a CRM's REST API described as data.

A connector spec says, for each object the CRM has (ticket, user, …), how each canonical operation
(`get`, `lookup`, `create`, `update`, `add_comment`, `assign`) becomes an HTTP request, and how to
read the record out of the response. Paths, query strings, headers and bodies are templates over
the operation's context:

| name        | what it holds                                                      |
|-------------|--------------------------------------------------------------------|
| record_id   | the record the step acts on                                        |
| fields      | the fields to write (create / update)                              |
| criteria    | what a lookup searches by, e.g. `{email: …}`                       |
| body/public | a comment's text and visibility (add_comment)                      |
| owner_id    | the new owner (assign)                                             |
| step_key    | `execution_id:step_id`, deterministic: the idempotency key/marker  |
| now         | the time of this attempt, ISO-8601 UTC with milliseconds           |
| connection  | the connection's `config` values                                   |

Built-in specs live in `uwf/connectors/specs/<id>.yaml`; a tenant's metadata may bring its own.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from uwf.connectors._fields import FieldSpec, FieldType, native_path_expression, place_native
from uwf.errors import ExpressionError
from uwf.mapping import Expression, compile_expression, compile_value, document_fits

__all__ = [
    "OPERATIONS",
    "ChoicesSpec",
    "ConnectorSpec",
    "DescribeSpec",
    "ErrorSpec",
    "FieldSpec",
    "FieldType",
    "LimitsSpec",
    "ObjectSpec",
    "OperationName",
    "OperationSpec",
    "RateLimitHeadersSpec",
    "VerifySpec",
]

OperationName = Literal["get", "lookup", "create", "update", "add_comment", "assign"]
OPERATIONS: tuple[str, ...] = ("get", "lookup", "create", "update", "add_comment", "assign")
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerifySpec(_Spec):
    """How to find out whether a write whose response was lost did happen.

    The request (`method`, `path`, `query`, `body`) lists candidates; `items` selects them from
    the answer, and a candidate matches when `marker` (read from it) equals `expected` (read
    from the operation's context). By default the write carries the step key as a marker; a CRM
    that cannot store one is matched on content instead, e.g. `marker: CommentBody`,
    `expected: body`.
    """

    method: HttpMethod = Field(default="GET", description="HTTP method of the look-up")
    path: str = Field(description="Path template under the base URL")
    query: dict[str, Any] = Field(default_factory=dict, description="Query templates")
    body: Any = Field(default=None, description="JSON body template (e.g. a search)")
    items: str = Field(
        description="JMESPath over `{body, status, headers, input}` selecting the candidates"
    )
    marker: str = Field(description="JMESPath reading the marker from one candidate")
    expected: str = Field(
        default="step_key", description="JMESPath over the operation's context: the value sought"
    )
    settle_seconds: float = Field(
        default=0,
        ge=0,
        le=600,
        description="How long after the write the look-up can be trusted to see it (search "
        "indexes lag): finding nothing sooner means checking again later, not sending again",
    )
    page_param: str | None = Field(
        default=None,
        description="Query parameter numbering the pages of the look-up (e.g. `page`); "
        "pages are read until a match, an empty page or `max_pages`",
    )
    first_page: int = Field(default=1, ge=0, description="The number of the first page")
    max_pages: int = Field(default=1, ge=1, le=50, description="At most this many pages")

    @cached_property
    def compiled(self) -> dict[str, Any]:
        return {
            "path": compile_value(self.path),
            "query": compile_value(self.query),
            "body": compile_value(self.body) if self.body is not None else None,
            "items": compile_expression(self.items),
            "marker": compile_expression(self.marker),
            "expected": compile_expression(self.expected),
        }


class OperationSpec(_Spec):
    """One canonical operation on one object, as an HTTP request."""

    method: HttpMethod = Field(description="HTTP method")
    path: str = Field(description="Path template under the connection's base URL")
    query: dict[str, Any] = Field(default_factory=dict, description="Query string templates")
    headers: dict[str, str] = Field(default_factory=dict, description="Header templates")
    body: Any = Field(default=None, description="JSON body template")
    result: str | None = Field(
        default=None,
        description="JMESPath over `{body, status, headers, input}` selecting the record "
        "(a list, for lookups); `input` is the operation's context. Default: the body",
    )
    idempotent: bool | None = Field(
        default=None,
        description="Whether sending twice has the effect of sending once; "
        "default: true for GET, PUT, PATCH and DELETE",
    )
    idempotency_header: str | None = Field(
        default=None, description="Header that carries the step key, where the CRM supports one"
    )
    verify: VerifySpec | None = None

    @property
    def is_idempotent(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method != "POST" or self.idempotency_header is not None

    @cached_property
    def compiled(self) -> dict[str, Any]:
        return {
            "path": compile_value(self.path),
            "query": compile_value(self.query),
            "headers": compile_value(self.headers),
            "body": compile_value(self.body) if self.body is not None else None,
            "result": compile_expression(self.result) if self.result else None,
        }

    def check(self) -> None:
        """Compile every template now, so a bad spec fails at load time."""
        _ = self.compiled
        if self.verify is not None:
            _ = self.verify.compiled


class ChoicesSpec(_Spec):
    """A further request listing picklist options apart from the fields themselves.

    Some CRMs keep choices in their own table (ServiceNow `sys_choice`) or only expand them on a
    typed request (Dataverse option sets). `items` selects entries from the answer; `field` names
    the field an entry belongs to; `options` selects the entry's options (default: the entry is
    one option), and `value` and `label` read each option.
    """

    method: HttpMethod = Field(default="GET", description="HTTP method")
    path: str = Field(description="Path template under the base URL")
    query: dict[str, Any] = Field(default_factory=dict, description="Query templates")
    body: Any = Field(default=None, description="JSON body template")
    items: str = Field(description="JMESPath over `{body, status, headers, input}`: the entries")
    field: str = Field(description="JMESPath over one entry: the native field name")
    options: str | None = Field(
        default=None, description="JMESPath over one entry: its options (default: the entry)"
    )
    value: str = Field(default="value", description="JMESPath over one option: the value")
    label: str = Field(default="label", description="JMESPath over one option: its label")

    @cached_property
    def compiled(self) -> dict[str, Any]:
        return {
            "path": compile_value(self.path),
            "query": compile_value(self.query),
            "body": compile_value(self.body) if self.body is not None else None,
            "items": compile_expression(self.items),
            "field": compile_expression(self.field),
            "options": compile_expression(self.options) if self.options else None,
            "option_value": compile_expression(self.value),
            "option_label": compile_expression(self.label),
        }


class DescribeSpec(_Spec):
    """How to read an object's live field metadata (`uwf connections describe`, `--against-crm`).

    The request (`method`, `path`, `query`, `body`) fetches the CRM's field definitions; `fields`
    selects them from the answer and the other expressions read one definition: its native
    `name` (the name a write uses), `label`, `type`, whether it is `required` and `read_only`,
    and its picklist `options`. Options may be a list (of objects or of plain values) or an
    object, whose entries become `{key, value}`; `option_value` and `option_label` read each
    option. `choices` are further requests for CRMs that list options elsewhere.
    """

    method: HttpMethod = Field(default="GET", description="HTTP method")
    path: str = Field(description="Path template under the base URL")
    query: dict[str, Any] = Field(default_factory=dict, description="Query templates")
    body: Any = Field(default=None, description="JSON body template")
    fields: str = Field(
        default="body", description="JMESPath over `{body, status, headers, input}`: the fields"
    )
    name: str = Field(description="JMESPath over one field: its native (writable) name")
    label: str | None = Field(default=None, description="JMESPath: the field's display label")
    type: str | None = Field(default=None, description="JMESPath: the CRM's type name")
    required: str | None = Field(default=None, description="JMESPath: truthy when required")
    read_only: str | None = Field(
        default=None, description="JMESPath: truthy when the API cannot write the field"
    )
    options: str | None = Field(default=None, description="JMESPath: the picklist's options")
    option_value: str = Field(
        default="value", description="JMESPath over one option (an object): the stored value"
    )
    option_label: str = Field(
        default="label", description="JMESPath over one option (an object): its label"
    )
    choices: list[ChoicesSpec] = Field(
        default_factory=list, description="Further requests that list options by field"
    )

    @cached_property
    def compiled(self) -> dict[str, Any]:
        optional = ("label", "type", "required", "read_only", "options")
        compiled: dict[str, Any] = {
            "path": compile_value(self.path),
            "query": compile_value(self.query),
            "body": compile_value(self.body) if self.body is not None else None,
            "fields": compile_expression(self.fields),
            "name": compile_expression(self.name),
            "option_value": compile_expression(self.option_value),
            "option_label": compile_expression(self.option_label),
        }
        for key in optional:
            source = getattr(self, key)
            compiled[key] = compile_expression(source) if source else None
        return compiled

    def check(self) -> None:
        """Compile every template now, so a bad spec fails at load time."""
        _ = self.compiled
        for choices in self.choices:
            _ = choices.compiled


class ObjectSpec(_Spec):
    """An object of the CRM, named canonically (case, comment, user, account, contact, …).

    `fields` maps canonical field names a workflow writes (`priority`, `owner_id`, …) to the
    CRM's own: a plain string is the native name; a `FieldSpec` adds a type (writes are coerced,
    errors name the field and the value) and, for enums, the canonical values with the CRM's
    spelling of each. Names it does not list pass through unchanged, so a CRM's own fields work
    as written. `record` reads canonical fields out of a native record (JMESPath each); a
    step's output is then the canonical fields plus `native`, the record as the CRM returned
    it, and for every enum field the CRM's own value beside the canonical one
    (`priority_native`). Boolean, integer, decimal and datetime fields read back as JSON of
    their type (HubSpot's `"true"` is `true`); a value that does not convert stays as sent.
    """

    description: str | None = Field(default=None, description="What the object is")
    native_name: str | None = Field(default=None, description="The CRM's name for the object")
    fields: dict[str, str | FieldSpec] = Field(
        default_factory=dict,
        description="Canonical field → native name, or a `FieldSpec` (native, type, values)",
    )
    record: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field → JMESPath reading it from a native record",
    )
    record_fields: str | None = Field(
        default=None,
        description="JMESPath to where a native record keeps its fields, when not at its top "
        "(HubSpot: `properties`); fields with no `record` entry are read from there",
    )
    operations: dict[OperationName, OperationSpec] = Field(
        description="Canonical operation → HTTP request"
    )
    describe: DescribeSpec | None = Field(
        default=None, description="How to read the object's live field metadata"
    )

    @cached_property
    def field_specs(self) -> dict[str, FieldSpec]:
        """Every mapped field as a `FieldSpec` (a plain name becomes an untyped one)."""
        return {
            name: spec if isinstance(spec, FieldSpec) else FieldSpec(native=spec)
            for name, spec in self.fields.items()
        }

    @cached_property
    def compiled_record(self) -> dict[str, Expression]:
        compiled = {name: compile_expression(expr) for name, expr in self.record.items()}
        if self.record:
            # Typed fields the record view does not name (custom fields) are read too.
            for name, spec in self.field_specs.items():
                if spec.read is not None:
                    compiled[name] = compile_expression(spec.read)
                elif name not in compiled and isinstance(self.fields[name], FieldSpec):
                    path = native_path_expression(spec.native, self.record_fields)
                    compiled[name] = compile_expression(path)
        return compiled

    def to_native(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields to send: native names, coerced values (enums in the CRM's spelling).

        Raises:
            ExpressionError: a value cannot be converted to its field's type; the message
                names the field and the value.
        """
        out: dict[str, Any] = {}
        for name, value in fields.items():
            spec = self.field_specs.get(name)
            if spec is None:
                out[name] = value
            else:
                place_native(out, spec.native, spec.to_native(name, value))
        return out

    def to_canonical(self, record: Any) -> Any:
        """The canonical view of one native record (or of each, for a list).

        Enums give the canonical value with the CRM's own beside it (`<field>_native`); other
        typed fields are converted by their type (see `FieldSpec.to_canonical`); the whole
        native record stays under `native`.
        """
        if not self.record:
            return record
        if isinstance(record, list):
            return [self.to_canonical(item) for item in record]
        if not isinstance(record, dict):
            return record
        # One size check of the record for all its fields, not one per field.
        checked = document_fits(record)
        view = {
            name: expr.evaluate(record, checked=checked)
            for name, expr in self.compiled_record.items()
        }
        for name, spec in self.field_specs.items():
            if spec.type is None or name not in view:
                continue
            if spec.type == "enum":
                view[f"{name}_native"] = view[name]
            view[name] = spec.to_canonical(view[name])
        view["native"] = record
        return view

    def with_fields(
        self, custom: dict[str, FieldSpec], overrides: dict[str, FieldSpec]
    ) -> ObjectSpec:
        """This object with a tenant's custom fields added and some mappings replaced.

        An override replaces the spec's mapping of that field, and its reading too: the
        record view then reads the field where the override says it lives.
        """
        if not custom and not overrides:
            return self
        fields: dict[str, str | FieldSpec] = {**self.fields, **custom, **overrides}
        record = {k: v for k, v in self.record.items() if k not in overrides}
        data = {name: getattr(self, name) for name in type(self).model_fields}
        return ObjectSpec(**{**data, "fields": fields, "record": record})


class ErrorSpec(_Spec):
    """How to read the CRM's error bodies and which statuses are worth retrying."""

    message: str = Field(
        default="message || error.message || error || errors[0].message",
        description="JMESPath reading a human message from an error body",
    )
    retryable_statuses: list[int] = Field(
        default_factory=lambda: [408, 425, 429, 500, 502, 503, 504]
    )

    @cached_property
    def message_expression(self) -> Expression:
        return compile_expression(self.message)


class RateLimitHeadersSpec(_Spec):
    """Response headers through which the CRM reports its rate-limit budget."""

    limit: str | None = Field(default=None, description="Header with the budget's size")
    remaining: str | None = Field(default=None, description="Header with what is left")
    reset: str | None = Field(default=None, description="Header with when it resets")
    reset_format: Literal["seconds", "unix"] = Field(
        default="seconds", description="`reset` is seconds from now, or a Unix time"
    )
    retry_after: str = Field(default="Retry-After", description="Header saying when to retry")


class LimitsSpec(_Spec):
    """The budget UWF keeps to when calling one connection, across all its workers.

    A connector gives defaults from the CRM's published limits; a connection may override
    them (its plan may allow more or less).
    """

    requests: int | None = Field(default=None, ge=1, description="Requests per window")
    window_seconds: float = Field(default=60, gt=0, le=86400, description="The window's length")
    daily: int | None = Field(default=None, ge=1, description="Requests per UTC day")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Requests in flight at once, across all workers"
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open the circuit breaker"
    )
    breaker_open_seconds: float = Field(
        default=30, gt=0, description="How long an open breaker stops calls before a probe"
    )


class AuthTemplateSpec(_Spec):
    """How a connection's credentials become an `Authorization` header for this CRM.

    `basic` and `bearer` are templates over the connection's auth fields; `header` sends
    `value` (a template too) in the header named `header`, e.g. `X-Api-Key`. `oauth2` obtains an
    access token from the token endpoint (`token_url`, a template over the auth fields and
    `base_url`, used when the connection names none) and sends it as a bearer token.
    """

    type: Literal["basic", "bearer", "header", "oauth2"]
    username: str | None = Field(default=None, description="Template over the auth fields")
    header: str | None = Field(default=None, description="`header`: the header's name")
    value: str | None = Field(default=None, description="`header`: template of its value")
    password: str | None = None
    token: str | None = None
    token_url: str | None = None
    audience: str | None = Field(default=None, description="JWT bearer: default `aud` claim")
    default_ttl_seconds: float = Field(
        default=3600, gt=0, description="Token lifetime assumed when the CRM gives no expires_in"
    )


class ConnectorSpec(_Spec):
    """A CRM's REST API as data. `id` is kebab-case and equals the spec file's name."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="What connections name")
    name: str = Field(description="The CRM's name, as messages show it")
    docs_url: str | None = Field(default=None, description="The vendor's API reference")
    auth: dict[str, AuthTemplateSpec] = Field(
        description="Auth types a connection may use (api_token, basic, bearer, …) → header form"
    )
    default_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent with every request"
    )
    recorded_headers: list[str] = Field(
        default_factory=list,
        description="Response headers worth keeping in the step ledger (request ids, …) besides "
        "content type, location, retry and rate-limit headers",
    )
    rate_limit: RateLimitHeadersSpec = Field(
        default_factory=RateLimitHeadersSpec, description="Where the CRM reports its budget"
    )
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="Default budget, from the CRM's published limits"
    )
    errors: ErrorSpec = Field(
        default_factory=ErrorSpec, description="How to read errors and which to retry"
    )
    health: OperationSpec | None = Field(
        default=None, description="A cheap authenticated request, for `connections test`"
    )
    objects: dict[str, ObjectSpec] = Field(
        description="Objects by canonical name (`case`, `user`, …)"
    )

    @model_validator(mode="after")
    def _compile_everything(self) -> ConnectorSpec:
        """Compile every template now, so a bad spec is refused with where the problem is."""
        checks: list[tuple[str, Any]] = [
            (f"objects.{name}.operations.{op_name}", op.check)
            for name, obj in self.objects.items()
            for op_name, op in obj.operations.items()
        ]
        checks += [
            (f"objects.{name}.record", lambda o=obj: o.compiled_record)
            for name, obj in self.objects.items()
        ]
        checks += [
            (f"objects.{name}.describe", obj.describe.check)
            for name, obj in self.objects.items()
            if obj.describe is not None
        ]
        if self.health is not None:
            checks.append(("health", self.health.check))
        checks.append(("errors.message", lambda: self.errors.message_expression))
        for auth_name, template in self.auth.items():
            for value in (template.username, template.password, template.token, template.token_url):
                if value is not None:
                    checks.append((f"auth.{auth_name}", lambda v=value: compile_value(v)))
        for where, check in checks:
            try:
                check()
            except ExpressionError as exc:
                raise ValueError(f"{where}: {exc.message}") from None
        return self

    def customized(
        self,
        custom_fields: dict[str, dict[str, FieldSpec]],
        field_mappings: dict[str, dict[str, FieldSpec]],
    ) -> ConnectorSpec:
        """This spec as one connection sees it: its custom fields added, its mappings applied.

        Both are keyed by object, then canonical field name; objects the spec does not have
        are left to metadata validation to report.
        """
        if not custom_fields and not field_mappings:
            return self
        objects = {
            name: obj.with_fields(custom_fields.get(name, {}), field_mappings.get(name, {}))
            for name, obj in self.objects.items()
        }
        return self.model_copy(update={"objects": objects})

    def operation(self, obj: str, op: str) -> OperationSpec | None:
        spec = self.objects.get(obj)
        return None if spec is None else spec.operations.get(op)  # type: ignore[call-overload]
