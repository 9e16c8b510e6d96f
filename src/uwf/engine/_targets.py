"""Resolve a connection's metadata into a callable `Target` (base URL, credentials)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from uwf.auth import SecretResolver, SecretSources, TokenManager, build_authenticator
from uwf.connectors.runtime import Target
from uwf.errors import FatalError
from uwf.metadata import ConnectionSpec, MetadataBundle, SecretRef

__all__ = ["TargetResolver"]

_INTERPOLATION = re.compile(r"\$\{([a-z_]+):([^}]*)\}")
# Credentials from the Pipe DB or Vault may change (`uwf secrets set`, a rotation in Vault):
# targets built from them are rebuilt after this long.
DYNAMIC_SECRET_TTL = 30.0


class TargetResolver:
    """Builds and caches targets per (metadata version, connection)."""

    def __init__(
        self,
        secrets: SecretResolver,
        sandbox_url: Callable[[str], str | None],
        tokens: TokenManager | None = None,
        sources: SecretSources | None = None,
    ) -> None:
        self._secrets = secrets
        self._sandbox_url = sandbox_url
        self._tokens = tokens
        self._sources = sources
        self._cache: dict[tuple[int, str], tuple[float, Target]] = {}

    def fresh(self) -> TargetResolver:
        """A resolver with the same secrets, sandboxes and tokens, and an empty cache."""
        return TargetResolver(self._secrets, self._sandbox_url, self._tokens, self._sources)

    async def resolve(
        self, version: int, bundle: MetadataBundle, connection: ConnectionSpec
    ) -> Target:
        """The target of `connection` in metadata `version` (whose content is `bundle`)."""
        key = (version, connection.name)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        refs = [
            v
            for v in (getattr(connection.auth, n) for n in type(connection.auth).model_fields)
            if isinstance(v, SecretRef)
        ]
        resolver = self._secrets
        dynamic = any(ref.dynamic for ref in refs)
        if dynamic:
            if self._sources is None:
                raise FatalError(
                    f"connection '{connection.name}' uses stored or Vault secrets, "
                    "which this process cannot read"
                )
            resolver = await self._sources.prefetch(connection.tenant, refs)
        target = self._build(bundle, connection, resolver)
        expires = time.monotonic() + DYNAMIC_SECRET_TTL if dynamic else float("inf")
        self._cache[key] = (expires, target)
        return target

    def _build(
        self, bundle: MetadataBundle, connection: ConnectionSpec, resolver: SecretResolver
    ) -> Target:
        spec = bundle.connectors.get(connection.connector)
        if spec is None:
            raise FatalError(f"unknown connector '{connection.connector}'")
        # The connection's custom fields and mappings belong to this metadata version, so the
        # next version's executions see a change at once (targets are cached per version).
        spec = spec.customized(connection.custom_fields, connection.field_mappings)

        def substitute(match: re.Match[str]) -> str:
            scheme, value = match.group(1), match.group(2)
            if scheme == "env":
                found = os.environ.get(value)
                if not found:
                    raise FatalError(f"environment variable {value} is not set")
                return found
            url = self._sandbox_url(value)
            if url is None:
                raise FatalError(
                    f"connection '{connection.name}' points at the built-in sandbox '{value}', "
                    "which is not running in this process (start `uwf serve`)"
                )
            return url

        def interpolate(text: str) -> str:
            return _INTERPOLATION.sub(substitute, text)

        base_url = interpolate(connection.base_url)
        auth = build_authenticator(connection, spec, resolver, self._tokens, interpolate, base_url)
        return Target(
            connection=connection.name,
            base_url=base_url,
            spec=spec,
            auth=auth,
            timeout_seconds=connection.timeout_seconds,
            config=connection.config,
            connect_timeout=connection.timeouts.connect_seconds,
            read_timeout=connection.timeouts.read_seconds,
        )
