"""Keep secrets out of everything UWF writes down: log lines, error texts, the step ledger.

Two nets, both applied by `scrub`:

* by name: the value under a key such as `Authorization`, `Cookie`, `X-Api-Key`, `password`,
  `client_secret`, `access_token` is replaced, whatever it is;
* by value: every secret this process has resolved or received (CRM credentials, OAuth access
  and refresh tokens, stored and Vault secrets) is remembered (`remember_secrets`) and cut out
  of any string it appears in, e.g. a CRM error message that echoes a token.

`redact_processor` applies the same to every structlog event just before it is rendered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Any

__all__ = [
    "REDACTED",
    "SECRET_KEYS",
    "known_secrets",
    "redact_processor",
    "remember_secrets",
    "scrub",
]

REDACTED = "[REDACTED]"
SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-vault-token",
        "password",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "secret",
        "client_secret",
        "api_token",
        "private_key",
        "assertion",
    }
)
# Shorter values would cut ordinary words out of texts; real secrets are far longer.
_MIN_SECRET_LENGTH = 6
_MAX_REMEMBERED = 4096

_lock = threading.Lock()
_remembered: OrderedDict[str, None] = OrderedDict()
# `_remembered` longest first, kept sorted when it changes: every log line and every recorded
# request reads it, and secrets are remembered far less often than that.
_longest_first: tuple[str, ...] = ()


def remember_secrets(values: Iterable[str | None]) -> None:
    """Remember values to cut out of every later log line and record of this process."""
    global _longest_first
    with _lock:
        added = False
        for value in values:
            if not value or len(value) < _MIN_SECRET_LENGTH:
                continue
            added = added or value not in _remembered
            _remembered[value] = None
            _remembered.move_to_end(value)
        while len(_remembered) > _MAX_REMEMBERED:
            _remembered.popitem(last=False)
        if added:  # only an addition can evict
            _longest_first = tuple(sorted(_remembered, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    """What `remember_secrets` holds, longest first (so a secret's prefix never wins)."""
    return _longest_first


def scrub(value: Any, secrets: Iterable[str] = (), *, mask: str = REDACTED) -> Any:
    """A copy of `value` (JSON-like) without secrets: by key name and by value."""
    known = known_secrets()
    extra = [s for s in secrets if s and s not in known]
    values = sorted({*extra, *known}, key=len, reverse=True) if extra else list(known)
    return _scrub(value, values, mask)


def _scrub(value: Any, secrets: list[str], mask: str) -> Any:
    # Dispatch on the exact type first: this walks every recorded request and response.
    kind = type(value)
    if kind is str:
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, mask)
        return value
    if kind is dict or isinstance(value, dict):
        return {
            k: mask if _is_secret_key(k) else _scrub(v, secrets, mask) for k, v in value.items()
        }
    if kind in _PLAIN:
        return value
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets, mask) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, mask)
        return value
    return value


_PLAIN = frozenset({int, float, bool, type(None)})
# Keys seen before, whether they name a secret: the same few hundred keys recur in every
# record, and lower-casing each one every time cost more than the lookup (bounded).
_secret_key_seen: dict[Any, bool] = {}


def _is_secret_key(key: Any) -> bool:
    known = _secret_key_seen.get(key)
    if known is None:
        known = isinstance(key, str) and key.lower() in SECRET_KEYS
        if len(_secret_key_seen) >= 4096:
            _secret_key_seen.clear()
        _secret_key_seen[key] = known
    return known


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the event without secrets (keys by name, values remembered)."""
    secrets = list(known_secrets())
    for key, value in list(event_dict.items()):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str | dict | list | tuple):
            event_dict[key] = _scrub(value, secrets, REDACTED)
        elif isinstance(value, BaseException):
            event_dict[key] = _scrub(f"{type(value).__name__}: {value}", secrets, REDACTED)
    return event_dict
