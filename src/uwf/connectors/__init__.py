"""Connectors: CRM APIs described as data, and the runtime that calls them over HTTP."""

from uwf.connectors._reference import reference_markdown
from uwf.connectors._registry import builtin_connectors
from uwf.connectors.spec import (
    OPERATIONS,
    ConnectorSpec,
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
    "ConnectorSpec",
    "ErrorSpec",
    "FieldSpec",
    "FieldType",
    "LimitsSpec",
    "ObjectSpec",
    "OperationName",
    "OperationSpec",
    "RateLimitHeadersSpec",
    "VerifySpec",
    "builtin_connectors",
    "reference_markdown",
]
