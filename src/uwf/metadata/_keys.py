"""Ledger keys of nested steps: `branch.case0.note`, `loop[3].note`, `sub.note`, `on_failure.x`,
`note.on_failure.x` (a step's own compensation).

The engine (`uwf.engine._flow`) makes them; the API and replay read them back with these
helpers, so the format is defined in one place.
"""

from __future__ import annotations

import re
from typing import Any

from uwf.metadata._bundle import MetadataBundle
from uwf.metadata._models import CallWorkflowStep, ForEachStep, SwitchStep, WorkflowSpec

__all__ = ["key_root", "step_at"]

_PART = re.compile(r"([a-z][a-z0-9_]*)(?:\[(\d+)\])?")


def key_root(key: str) -> str:
    """The top-level step (or `on_failure`) a ledger key belongs to: `loop[3].note` → `loop`."""
    return re.split(r"[.\[]", key, maxsplit=1)[0]


def step_at(bundle: MetadataBundle, workflow: WorkflowSpec, key: str) -> Any:
    """The step spec a ledger key names, or None when the metadata has no such step."""
    parts = key.split(".")
    steps: list[Any] = workflow.steps
    if parts[0] == "on_failure":
        steps, parts = workflow.on_failure or [], parts[1:]
    index = 0
    while index < len(parts):
        match = _PART.fullmatch(parts[index])
        step = next((s for s in steps if match and s.id == match.group(1)), None)
        if match is None or step is None:
            return None
        last = index == len(parts) - 1
        if last and match.group(2) is None:
            return step
        if match.group(2) is None and parts[index + 1] == "on_failure" and step.on_failure:
            # `note.on_failure.reopen`: a step of `note`'s own compensation.
            steps = step.on_failure
            index += 2
        elif isinstance(step, SwitchStep) and not last and match.group(2) is None:
            label = parts[index + 1]
            if label == "default":
                steps = step.default or []
            elif (
                label.startswith("case")
                and label[4:].isdigit()
                and int(label[4:]) < len(step.cases)
            ):
                steps = step.cases[int(label[4:])].steps
            else:
                return None
            index += 2
        elif isinstance(step, ForEachStep) and match.group(2) is not None and not last:
            steps = step.steps
            index += 1
        elif isinstance(step, CallWorkflowStep) and match.group(2) is None:
            called = bundle.workflow(workflow.tenant, step.workflow)
            if called is None:
                return None
            workflow, steps = called, called.steps
            index += 1
        else:
            return None
    return None
