"""The connector spec reference page, generated from the pydantic models themselves."""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from uwf.connectors.spec import (
    AuthTemplateSpec,
    ChoicesSpec,
    ConnectorSpec,
    DescribeSpec,
    ErrorSpec,
    FieldSpec,
    LimitsSpec,
    ObjectSpec,
    OperationSpec,
    RateLimitHeadersSpec,
    VerifySpec,
)

__all__ = ["reference_markdown"]

_MODELS: tuple[type[BaseModel], ...] = (
    ConnectorSpec,
    AuthTemplateSpec,
    ObjectSpec,
    FieldSpec,
    OperationSpec,
    VerifySpec,
    DescribeSpec,
    ChoicesSpec,
    ErrorSpec,
    RateLimitHeadersSpec,
    LimitsSpec,
)


def _type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    text = re.sub(r"typing\.|uwf\.connectors\.(spec|_fields)\.", "", text)
    return text.replace("|", "or").replace("NoneType", "None")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "see below" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{field.default!r}`"


def reference_markdown() -> str:
    """Markdown describing every field of a connector spec (`uwf connectors reference`)."""
    lines = [
        "# Connector spec reference",
        "",
        "Generated from the pydantic models in `src/uwf/connectors/spec.py` by "
        "`uwf connectors reference`; do not edit by hand. See [connectors.md](../connectors.md) "
        "for a guided tour. A spec is a YAML file in `src/uwf/connectors/specs/` (built in) or "
        "a `kind: connector` document in a tenant's metadata.",
    ]
    for model in _MODELS:
        doc = inspect.cleandoc(model.__doc__ or "")
        lines += [
            "",
            f"## `{model.__name__}`",
            "",
            doc,
            "",
            "| field | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
            kind = _type(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | `{kind}` | {_default(field)} | {meaning} |")
    return "\n".join(lines) + "\n"
