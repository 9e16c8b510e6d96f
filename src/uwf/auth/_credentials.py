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
from typing import Any, Protocol

from uwf.auth._oauth import Grant, TokenManager
from uwf.connectors import ConnectorSpec
from uwf.errors import FatalError
from uwf.mapping import compile_value
from uwf.metadata import OAUTH2_TYPES, ConnectionSpec, SecretRef
from uwf.observability import REDACTED, remember_secrets, scrub

__all__ = [
    "REDACTED",
    "Credentials",
    "SecretResolver",
    "build_credentials",
    "env_or_sandbox_resolver",
    "redact",
]


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
        if ref.sandbox is None or ref.field is None:
            raise FatalError(f"{ref.describe()} cannot be read here (no Pipe DB or Vault)")
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


class Authenticator(Protocol):
    """What the connector runtime asks for each request's credentials."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to redact from anything recorded."""

    async def headers(self) -> dict[str, str]:
        """Headers to send now; may fetch or refresh a token."""

    async def rejected(self, headers: dict[str, str]) -> bool:
        """The CRM answered 401 to `headers`; True when a retry with new ones may succeed."""


@dataclass(frozen=True, slots=True)
class StaticAuth:
    """Credentials that do not change: API tokens, basic auth, fixed bearer tokens."""

    credentials: Credentials

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.credentials.secrets

    async def headers(self) -> dict[str, str]:
        return self.credentials.headers

    async def rejected(self, headers: dict[str, str]) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class OAuthAuth:
    """A bearer token from an OAuth 2.0 token endpoint, shared and refreshed by `TokenManager`."""

    manager: TokenManager
    key: str
    grant: Grant

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.grant.secrets

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.manager.access_token(self.key, self.grant)}"}

    async def rejected(self, headers: dict[str, str]) -> bool:
        used = headers.get("Authorization", "").removeprefix("Bearer ")
        await self.manager.invalidate(self.key, used)
        return True


def build_authenticator(
    connection: ConnectionSpec,
    connector: ConnectorSpec,
    resolve: SecretResolver,
    tokens: TokenManager | None,
    interpolate: Callable[[str], str],
    base_url: str,
) -> Authenticator:
    """The authenticator a connection's auth metadata asks for."""
    auth = connection.auth
    template = connector.auth.get(auth.type)
    if template is None:
        raise FatalError(f"connector '{connector.id}' does not support auth '{auth.type}'")
    if auth.type not in OAUTH2_TYPES:
        return StaticAuth(build_credentials(connection, connector, resolve))
    if tokens is None:
        raise FatalError("OAuth connections need a token manager")
    fields = _resolved_fields(auth, resolve)
    token_url = getattr(auth, "token_url", None)
    if token_url:
        token_url = interpolate(token_url)
    elif template.token_url:
        token_url = str(
            compile_value(template.token_url).evaluate({**fields, "base_url": base_url})
        )
    else:
        raise FatalError(
            f"connection '{connection.name}' needs `auth.token_url`: connector "
            f"'{connector.id}' has no default token endpoint"
        )
    grant = Grant(
        auth_type=auth.type,
        token_url=token_url,
        client_id=str(fields["client_id"]),
        client_secret=fields.get("client_secret"),
        scope=fields.get("scope"),
        username=fields.get("username"),
        password=fields.get("password"),
        refresh_token=fields.get("refresh_token"),
        private_key=fields.get("private_key"),
        audience=fields.get("audience") or template.audience,
        default_ttl_seconds=template.default_ttl_seconds,
    )
    return OAuthAuth(tokens, f"{connection.name}:{grant.fingerprint()}", grant)


def _resolved_fields(auth: Any, resolve: SecretResolver) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in type(auth).model_fields:
        if name == "type":
            continue
        value = getattr(auth, name)
        if isinstance(value, SecretRef):
            value = resolve(value)
            remember_secrets([value])
        fields[name] = value
    return fields


def build_credentials(
    connection: ConnectionSpec, connector: ConnectorSpec, resolve: SecretResolver
) -> Credentials:
    auth = connection.auth
    template = connector.auth.get(auth.type)
    if template is None:
        raise FatalError(f"connector '{connector.id}' does not support auth '{auth.type}'")
    fields = _resolved_fields(auth, resolve)
    secrets = [str(fields[name]) for name in fields if isinstance(getattr(auth, name), SecretRef)]
    if template.type == "basic":
        username = compile_value(template.username or "").evaluate(fields)
        password = compile_value(template.password or "").evaluate(fields)
        raw = f"{username}:{password}".encode()
        header = "Basic " + base64.b64encode(raw).decode()
    elif template.type == "header":
        if not template.header:
            raise FatalError(f"connector '{connector.id}': auth '{auth.type}' names no header")
        value = str(compile_value(template.value or "").evaluate(fields))
        remember_secrets([*secrets, value])
        return Credentials({template.header: value}, tuple(s for s in [*secrets, value] if s))
    else:
        header = "Bearer " + str(compile_value(template.token or "").evaluate(fields))
    secrets.append(header)
    remember_secrets(secrets)
    return Credentials({"Authorization": header}, tuple(s for s in secrets if s))


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` (JSON-like) with secrets replaced by `[REDACTED]`.

    Secret-named keys (`Authorization`, `password`, …), the given `secrets` and every secret
    this process has resolved (`uwf.observability.remember_secrets`) are removed.
    """
    return scrub(value, secrets)
