"""A consistent set of metadata documents, as applied, versioned and executed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter

from uwf.connectors import ConnectorSpec, builtin_connectors
from uwf.mapping import ValueMap
from uwf.metadata._models import (
    ConnectionSpec,
    ConnectorDocument,
    Document,
    TenantSpec,
    TriggerSpec,
    ValueMapSpec,
    WorkflowSpec,
)

__all__ = ["MetadataBundle"]

_DOCUMENT = TypeAdapter(Document)
_KIND_ORDER = {
    "connector": 0,
    "tenant": 1,
    "connection": 2,
    "value_map": 3,
    "workflow": 4,
    "trigger": 5,
}


@dataclass(frozen=True)
class MetadataBundle:
    """Every document of one metadata version, indexed for the engine and the API."""

    documents: tuple[
        TenantSpec | ConnectionSpec | WorkflowSpec | ValueMapSpec | ConnectorDocument | TriggerSpec,
        ...,
    ]
    tenants: dict[str, TenantSpec] = field(init=False, repr=False)
    connections: dict[str, ConnectionSpec] = field(init=False, repr=False)
    workflows: dict[tuple[str, str], WorkflowSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        docs = self.documents
        object.__setattr__(self, "tenants", {d.name: d for d in docs if isinstance(d, TenantSpec)})
        object.__setattr__(
            self, "connections", {d.name: d for d in docs if isinstance(d, ConnectionSpec)}
        )
        object.__setattr__(
            self,
            "workflows",
            {(d.tenant, d.name): d for d in docs if isinstance(d, WorkflowSpec)},
        )

    @cached_property
    def connectors(self) -> dict[str, ConnectorSpec]:
        """Every connector a connection may name: the built-in ones and this metadata's own."""
        own = {d.id: d for d in self.documents if isinstance(d, ConnectorDocument)}
        return {**builtin_connectors(), **own}

    def workflow(self, tenant: str, name: str) -> WorkflowSpec | None:
        return self.workflows.get((tenant, name))

    def workflow_names(self, tenant: str) -> list[str]:
        return sorted(name for (t, name) in self.workflows if t == tenant)

    def triggers_for(self, tenant: str, connection: str) -> list[TriggerSpec]:
        """The triggers bound to one webhook endpoint, in the order they are tried (by name)."""
        found = (
            d
            for d in self.documents
            if isinstance(d, TriggerSpec) and d.tenant == tenant and d.connection == connection
        )
        return sorted(found, key=lambda d: d.name)

    def value_maps_for(self, tenant: str) -> dict[str, ValueMap]:
        """The value maps a tenant's expressions may use: shared ones, then its own."""
        maps: dict[str, ValueMap] = {}
        ordered = sorted(
            (d for d in self.documents if isinstance(d, ValueMapSpec)),
            key=lambda d: d.tenant is not None,
        )
        for doc in ordered:
            if doc.tenant in (None, tenant):
                maps[doc.name] = ValueMap(
                    doc.name,
                    {str(k): v for k, v in doc.values.items()},
                    doc.default,
                    doc.on_unmapped,
                )
        return maps

    def value_maps_for_workflow(self, workflow: WorkflowSpec) -> dict[str, ValueMap]:
        """The tenant's value maps plus the workflow's own (`value_maps:`), which win."""
        maps = self.value_maps_for(workflow.tenant)
        for name, local in (workflow.value_maps or {}).items():
            maps[name] = ValueMap(
                name,
                {str(k): v for k, v in local.values.items()},
                local.default,
                local.on_unmapped,
            )
        return maps

    def to_document(self) -> dict[str, Any]:
        """The JSON form stored in the Pipe DB, in a canonical order."""
        docs = sorted(
            self.documents,
            key=lambda d: (_KIND_ORDER[d.kind], getattr(d, "tenant", "") or "", _name(d)),
        )
        return {"documents": [d.model_dump(mode="json", exclude_defaults=True) for d in docs]}

    @cached_property
    def digest(self) -> str:
        canonical = json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> MetadataBundle:
        return cls(tuple(_DOCUMENT.validate_python(d) for d in document["documents"]))


def _name(doc: Any) -> str:
    """A document's name; a connector's is its id."""
    return str(getattr(doc, "name", None) or doc.id)
