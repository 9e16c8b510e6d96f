"""Turn a connection's auth metadata into request headers, and keep secrets out of records.

Secrets are resolved at call time from where the metadata points (`env`, a built-in sandbox);
they are never stored. Everything the ledger records passes through `redact`, which removes
`Authorization`-like headers, well-known secret field names and every resolved secret value.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uwf.connectors import ConnectorSpec
from uwf.errors import FatalError
from uwf.mapping import compile_value
from uwf.metadata import ConnectionSpec, SecretRef

__all__ = [
    "REDACTED",
    "Credentials",
    "SecretResolver",
    "build_credentials",
    "env_or_sandbox_resolver",
    "redact",
]

REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "secret",
        "client_secret",
        "api_token",
        "authorization",
    }
)

SecretResolver = Callable[[SecretRef], str]
"""Returns the secret a reference points to, or raises `FatalError` saying why it cannot."""


def env_or_sandbox_resolver(sandbox_credentials: Callable[[str], dict[str, str]]) -> SecretResolver:
    """The default resolver: environment variables and the built-in sandboxes' dev accounts."""

    def resolve(ref: SecretRef) -> str:
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if not value:
                raise FatalError(f"environment variable {ref.env} is not set")
            return value
        assert ref.sandbox is not None
        assert ref.field is not None
        creds = sandbox_credentials(ref.sandbox)
        if ref.field not in creds:
            raise FatalError(
                f"sandbox '{ref.sandbox}' has no credential '{ref.field}' "
                f"(known: {', '.join(sorted(creds))})"
            )
        return creds[ref.field]

    return resolve


@dataclass(frozen=True, slots=True)
class Credentials:
    """Resolved auth for one connection: the headers to send and the values to redact."""

    headers: dict[str, str]
    secrets: tuple[str, ...]

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Credentials(headers={list(self.headers)}, secrets={len(self.secrets)})"


def build_credentials(
    connection: ConnectionSpec, connector: ConnectorSpec, resolve: SecretResolver
) -> Credentials:
    auth = connection.auth
    template = connector.auth.get(auth.type)
    if template is None:
        raise FatalError(f"connector '{connector.id}' does not support auth '{auth.type}'")
    fields: dict[str, Any] = {}
    secrets: list[str] = []
    for name, value in auth.model_dump(exclude={"type"}).items():
        ref = getattr(auth, name)
        if isinstance(ref, SecretRef):
            fields[name] = resolve(ref)
            secrets.append(fields[name])
        else:
            fields[name] = value
    if template.type == "basic":
        username = compile_value(template.username or "").evaluate(fields)
        password = compile_value(template.password or "").evaluate(fields)
        raw = f"{username}:{password}".encode()
        header = "Basic " + base64.b64encode(raw).decode()
    else:
        header = "Bearer " + str(compile_value(template.token or "").evaluate(fields))
    secrets.append(header)
    return Credentials({"Authorization": header}, tuple(s for s in secrets if s))


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` (JSON-like) with secrets replaced by `[REDACTED]`."""
    if isinstance(value, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and k.lower() in _SECRET_KEYS | _SECRET_HEADERS
            else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    return value
