"""Secrets read from HashiCorp Vault's KV version 2 engine, over its documented HTTP API.

`GET {UWF_VAULT_ADDR}/v1/<mount>/data/<path>` with the `X-Vault-Token` header answers
`{"data": {"data": {<field>: <value>, …}, "metadata": {…}}}`; errors answer
`{"errors": [...]}` with 403 (token not allowed) or 404 (no such secret). A reference names the
API path as Vault's own CLI prints it for KV v2 (`secret/data/acme/zendesk`) and the field.

Values are cached for `ttl_seconds` (a short while: a rotated secret is picked up soon, and a
burst of executions does not hit Vault once each). Errors name the path, never the token.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from uwf.errors import FatalError, RetryableError

__all__ = ["VaultKvClient"]


class VaultKvClient:
    """Reads KV v2 secrets; one HTTP session, closed with `close()`."""

    def __init__(self, addr: str, token: str, *, ttl_seconds: float = 30.0) -> None:
        self._addr = addr.rstrip("/")
        self._token = token
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never the token
        return f"VaultKvClient({self._addr})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def read(self, path: str, field: str) -> str:
        """The value of `field` in the secret at `path`.

        Raises:
            FatalError: Vault refused the token, has no such secret or no such field.
            RetryableError: Vault could not be reached or answered 5xx.
        """
        data = await self._secret(path.strip("/"))
        if field not in data:
            raise FatalError(
                f"Vault secret {path} has no field '{field}' (fields: {', '.join(sorted(data))})"
            )
        value = data[field]
        return value if isinstance(value, str) else json.dumps(value)

    async def _secret(self, path: str) -> dict[str, Any]:
        cached = self._cache.get(path)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        url = f"{self._addr}/v1/{path}"
        try:
            async with self._session.get(
                url,
                headers={"X-Vault-Token": self._token},
                timeout=aiohttp.ClientTimeout(total=10),
                allow_redirects=False,
            ) as resp:
                status, text = resp.status, await resp.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"Vault at {self._addr} unreachable reading {path}: {type(exc).__name__}"
            ) from None
        body = _json(text)
        if status == 200 and isinstance(body, dict):
            data = (body.get("data") or {}).get("data")
            if isinstance(data, dict):
                self._cache[path] = (time.monotonic() + self._ttl, data)
                return data
            raise FatalError(f"Vault secret {path}: not a KV v2 answer (is the path …/data/…?)")
        reason = "; ".join(str(e) for e in (body or {}).get("errors", []) if e) or text[:200]
        if status == 403:
            raise FatalError(f"Vault refused to read {path} (403: {reason or 'forbidden'})")
        if status == 404:
            raise FatalError(f"Vault has no secret at {path} (404)")
        if status >= 500 or status == 429:
            raise RetryableError(f"Vault answered {status} reading {path}: {reason}", status=status)
        raise FatalError(f"Vault answered {status} reading {path}: {reason}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
