"""Resolve a connection's metadata into a callable `Target` (base URL, credentials)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from uwf.auth import SecretResolver, TokenManager, build_authenticator
from uwf.connectors.runtime import Target
from uwf.errors import FatalError
from uwf.metadata import ConnectionSpec, MetadataBundle

__all__ = ["TargetResolver"]

_INTERPOLATION = re.compile(r"\$\{([a-z_]+):([^}]*)\}")


class TargetResolver:
    """Builds and caches targets per (metadata version, connection)."""

    def __init__(
        self,
        secrets: SecretResolver,
        sandbox_url: Callable[[str], str | None],
        tokens: TokenManager | None = None,
    ) -> None:
        self._secrets = secrets
        self._sandbox_url = sandbox_url
        self._tokens = tokens
        self._cache: dict[tuple[int, str], Target] = {}

    def fresh(self) -> TargetResolver:
        """A resolver with the same secrets, sandboxes and tokens, and an empty cache."""
        return TargetResolver(self._secrets, self._sandbox_url, self._tokens)

    def resolve(self, version: int, bundle: MetadataBundle, connection: ConnectionSpec) -> Target:
        """The target of `connection` in metadata `version` (whose content is `bundle`)."""
        key = (version, connection.name)
        target = self._cache.get(key)
        if target is None:
            target = self._build(bundle, connection)
            self._cache[key] = target
        return target

    def _build(self, bundle: MetadataBundle, connection: ConnectionSpec) -> Target:
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
        auth = build_authenticator(
            connection, spec, self._secrets, self._tokens, interpolate, base_url
        )
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
