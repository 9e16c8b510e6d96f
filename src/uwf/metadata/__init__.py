"""Metadata: tenants, connections, workflows, value maps and triggers, from YAML, versioned."""

from uwf.metadata._bundle import MetadataBundle
from uwf.metadata._loader import Problem, check_bundle, load_directory, validate_directory
from uwf.metadata._models import (
    OAUTH2_TYPES,
    STEP_OPERATION,
    AddCommentStep,
    AssignStep,
    ConnectionSpec,
    CreateRecordStep,
    Document,
    LookupStep,
    RetrySpec,
    SecretRef,
    StepSpec,
    TenantSpec,
    TriggerSpec,
    UpdateRecordStep,
    ValueMapSpec,
    WorkflowSpec,
)
from uwf.metadata._schema import metadata_json_schema

__all__ = [
    "OAUTH2_TYPES",
    "STEP_OPERATION",
    "AddCommentStep",
    "AssignStep",
    "ConnectionSpec",
    "CreateRecordStep",
    "Document",
    "LookupStep",
    "MetadataBundle",
    "Problem",
    "RetrySpec",
    "SecretRef",
    "StepSpec",
    "TenantSpec",
    "TriggerSpec",
    "UpdateRecordStep",
    "ValueMapSpec",
    "WorkflowSpec",
    "check_bundle",
    "load_directory",
    "metadata_json_schema",
    "validate_directory",
]
