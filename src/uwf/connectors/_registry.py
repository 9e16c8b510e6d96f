"""Built-in connector specs, loaded by name from `specs/<id>.yaml`."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import ValidationError

from uwf.connectors.spec import ConnectorSpec
from uwf.errors import MetadataError


@cache
def builtin_connectors() -> dict[str, ConnectorSpec]:
    """Every built-in connector spec, by id. A broken built-in spec is a bug: fail loudly."""
    specs: dict[str, ConnectorSpec] = {}
    folder = resources.files("uwf.connectors") / "specs"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
        try:
            spec = ConnectorSpec.model_validate(data)
        except ValidationError as exc:
            raise MetadataError(f"built-in connector spec {entry.name} is invalid: {exc}") from exc
        if f"{spec.id}.yaml" != entry.name:
            raise MetadataError(f"connector spec {entry.name} declares id '{spec.id}'")
        specs[spec.id] = spec
    return specs
