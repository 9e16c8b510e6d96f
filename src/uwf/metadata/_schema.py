"""JSON Schema of a metadata document, for editors (yaml-language-server) and CI."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from uwf.metadata._models import Document


def metadata_json_schema() -> dict[str, Any]:
    schema = TypeAdapter(Document).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "UWF metadata document"
    return schema
