"""Connectors: CRM APIs described as data, and the runtime that calls them over HTTP."""

from uwf.connectors._describe import (
    FieldInfo,
    ObjectDescription,
    PicklistOption,
    describe_object,
    native_base,
)
from uwf.connectors._reference import reference_markdown
from uwf.connectors._registry import builtin_connectors
from uwf.connectors._ssrf import (
    GuardedResolver,
    NetworkPolicy,
    OutboundRefusedError,
    forbidden_reason,
    literal_ip,
)
from uwf.connectors.spec import (
    OPERATIONS,
    ChoicesSpec,
    ConnectorSpec,
    DescribeSpec,
    ErrorSpec,
    FieldSpec,
    FieldType,
    LimitsSpec,
    ObjectSpec,
    OperationName,
    OperationSpec,
    RateLimitHeadersSpec,
    VerifySpec,
)

__all__ = [
    "OPERATIONS",
    "ChoicesSpec",
    "ConnectorSpec",
    "DescribeSpec",
    "ErrorSpec",
    "FieldInfo",
    "FieldSpec",
    "FieldType",
    "GuardedResolver",
    "LimitsSpec",
    "NetworkPolicy",
    "ObjectDescription",
    "ObjectSpec",
    "OperationName",
    "OperationSpec",
    "OutboundRefusedError",
    "PicklistOption",
    "RateLimitHeadersSpec",
    "VerifySpec",
    "builtin_connectors",
    "describe_object",
    "forbidden_reason",
    "literal_ip",
    "native_base",
    "reference_markdown",
]
