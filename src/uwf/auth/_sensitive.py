"""Input fields a workflow marks as sensitive: sealed at rest, masked wherever they are shown.

A property of a workflow's `input_schema` is sensitive when it says `writeOnly: true` or
`x-uwf-sensitive: true` (JSON Schema keywords, so editors and validators keep working). The
marks are followed through `properties` and `items`; a sensitive object or array is sensitive
as a whole.

* At rest (`executions.input` in the Pipe DB) each sensitive value is replaced by a ciphertext
  (`uwf-sealed:v1:<key id>:…`, the `Vault`), bound to the tenant; the interpreter unseals it
  just before the steps need it.
* Shown (API, CLI, logs, the step ledger) the value is `***` under its own key, and the
  literal value is removed from everything the execution records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from uwf.auth._vault import Vault

__all__ = [
    "MASK",
    "has_sensitive",
    "mask_sensitive",
    "seal_sensitive",
    "sensitive_values",
    "unseal_sensitive",
]

MASK = "***"
SEALED_PREFIX = "uwf-sealed:"
_SEALED = SEALED_PREFIX


def is_sealed(value: Any) -> bool:
    """A value `seal_sensitive` made."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _is_sensitive(schema: Any) -> bool:
    return isinstance(schema, dict) and bool(
        schema.get("writeOnly") is True or schema.get("x-uwf-sensitive") is True
    )


def has_sensitive(schema: Any) -> bool:
    """Whether any property of `schema` is marked sensitive."""
    if _is_sensitive(schema):
        return True
    if not isinstance(schema, dict):
        return False
    props = schema.get("properties")
    children = list(props.values()) if isinstance(props, dict) else []
    if isinstance(schema.get("items"), dict):
        children.append(schema["items"])
    return any(has_sensitive(c) for c in children)


def _walk(schema: Any, value: Any, at_sensitive: Callable[[Any], Any]) -> Any:
    """A copy of `value` with every sensitive part replaced by `at_sensitive(part)`."""
    if _is_sensitive(schema):
        return at_sensitive(value)
    if not isinstance(schema, dict):
        return value
    props = schema.get("properties")
    if isinstance(value, dict) and isinstance(props, dict):
        return {k: _walk(props[k], v, at_sensitive) if k in props else v for k, v in value.items()}
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        return [_walk(items, v, at_sensitive) for v in value]
    return value


def mask_sensitive(value: Any, schema: Any) -> Any:
    """`value` with each sensitive part shown as `***` (its key kept)."""
    if not has_sensitive(schema):
        return value
    return _walk(schema, value, lambda _part: MASK)


def sensitive_values(value: Any, schema: Any) -> tuple[str, ...]:
    """The literal text of every sensitive part, to strip from whatever gets recorded."""
    found: list[str] = []

    def collect(part: Any) -> Any:
        for leaf in _leaves(part):
            text = leaf if isinstance(leaf, str) else json.dumps(leaf)
            if len(text) >= 3 and not text.startswith(_SEALED):
                found.append(text)
        return part

    if has_sensitive(schema):
        _walk(schema, value, collect)
    return tuple(dict.fromkeys(found))


def seal_sensitive(value: Any, schema: Any, vault: Vault, tenant: str) -> Any:
    """`value` with each sensitive part encrypted, for the Pipe DB."""
    if not has_sensitive(schema):
        return value

    def seal(part: Any) -> Any:
        if isinstance(part, str) and part.startswith(_SEALED):
            return part  # already sealed (a replay carries the original's ciphertext)
        return _SEALED + vault.encrypt(json.dumps(part).encode(), _context(tenant))

    return _walk(schema, value, seal)


def unseal_sensitive(value: Any, schema: Any, vault: Vault, tenant: str) -> Any:
    """`value` as the caller sent it, for the steps that need it."""
    if not has_sensitive(schema):
        return value

    def unseal(part: Any) -> Any:
        if isinstance(part, str) and part.startswith(_SEALED):
            return json.loads(vault.decrypt(part[len(_SEALED) :], _context(tenant)))
        return part

    return _walk(schema, value, unseal)


def reseal(text: str, vault: Vault, tenant: str) -> str:
    """A sealed value re-encrypted under the vault's current key (key rotation)."""
    plain = vault.decrypt(text[len(_SEALED) :], _context(tenant))
    return _SEALED + vault.encrypt(plain, _context(tenant))


def _context(tenant: str) -> str:
    return f"input:{tenant}"


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if value is None or isinstance(value, bool) else [value]
