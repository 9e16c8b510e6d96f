"""OAuth 2.0 access tokens: obtained, cached, shared by every worker, refreshed exactly once.

A token lives in three places: this process's memory (the fast path), the Pipe DB (encrypted,
shared by every worker process), and the CRM's token endpoint. When the token is missing or
about to expire, one coroutine per process takes a local lock, then the token row's lock in the
Pipe DB; whoever gets the row lock first refreshes, and everyone after it finds the new token
there. A `401` from the CRM expires the token that was used (only if nobody replaced it since)
and the call is retried once with a fresh one.

When the token endpoint refuses the credentials (`invalid_grant`, `invalid_client`, …) the
connection is marked `needs_reauth` with the CRM's reason: every execution that needs it fails
at once with that reason, and the token endpoint is not called again until the credentials
change (which changes the connection's key) or `uwf connections reauth` clears the mark.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import jwt

from uwf.auth._vault import Vault
from uwf.errors import FatalError, RetryableError
from uwf.observability import remember_secrets
from uwf.store import TokenRepo, TokenRow, utcnow

__all__ = ["Grant", "Token", "TokenManager"]

_GRANT_TYPES = {
    "oauth2_client_credentials": "client_credentials",
    "oauth2_refresh_token": "refresh_token",
    "oauth2_password": "password",
    "jwt_bearer": "urn:ietf:params:oauth:grant-type:jwt-bearer",
}


@dataclass(frozen=True, slots=True)
class Grant:
    """Everything needed to ask a token endpoint for an access token (secrets resolved)."""

    auth_type: str
    token_url: str
    client_id: str
    client_secret: str | None = None
    scope: str | None = None
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    private_key: str | None = None
    audience: str | None = None
    default_ttl_seconds: float = 3600

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Grant({self.auth_type}, {self.token_url}, client_id={self.client_id})"

    @property
    def secrets(self) -> tuple[str, ...]:
        values = (self.client_secret, self.password, self.refresh_token, self.private_key)
        return tuple(v for v in values if v)

    def fingerprint(self) -> str:
        """Changes whenever anything about the credentials changes, secrets included."""
        secret_digest = hashlib.sha256("\0".join(self.secrets).encode()).hexdigest()
        public = [
            self.auth_type,
            self.token_url,
            self.client_id,
            self.scope or "",
            self.username or "",
            self.audience or "",
            secret_digest,
        ]
        return hashlib.sha256("\0".join(public).encode()).hexdigest()[:16]

    def form(self, current: Token | None) -> dict[str, str]:
        form = {"grant_type": _GRANT_TYPES[self.auth_type]}
        if self.auth_type == "jwt_bearer":
            assert self.private_key is not None
            claims = {
                "iss": self.client_id,
                "sub": self.username,
                "aud": self.audience,
                "exp": int(time.time()) + 180,
            }
            form["assertion"] = jwt.encode(claims, self.private_key, algorithm="RS256")
            return form
        form["client_id"] = self.client_id
        if self.client_secret:
            form["client_secret"] = self.client_secret
        if self.scope:
            form["scope"] = self.scope
        if self.auth_type == "oauth2_password":
            form["username"] = self.username or ""
            form["password"] = self.password or ""
        elif self.auth_type == "oauth2_refresh_token":
            # A rotated refresh token (kept from the last answer) wins over the configured one.
            form["refresh_token"] = (current and current.refresh_token) or self.refresh_token or ""
        return form


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: datetime
    lifetime_seconds: float = 3600
    refresh_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.access_token.encode()).hexdigest()

    def fresh(self) -> bool:
        """Usable for a while yet: refresh a minute early, or a tenth of a short lifetime."""
        margin = min(60.0, self.lifetime_seconds / 10)
        return self.expires_at - timedelta(seconds=margin) > utcnow()

    def seal(self, vault: Vault, key: str) -> str:
        payload = {**asdict(self), "expires_at": self.expires_at.isoformat()}
        return vault.encrypt(json.dumps(payload).encode(), key)

    @classmethod
    def unseal(cls, vault: Vault, key: str, ciphertext: str) -> Token:
        data = json.loads(vault.decrypt(ciphertext, key))
        data["expires_at"] = datetime.fromisoformat(data["expires_at"])
        token = cls(**data)
        remember_secrets([token.access_token, token.refresh_token])
        return token


class TokenManager:
    """Hands out valid access tokens per connection key."""

    def __init__(
        self,
        tokens: TokenRepo,
        vault: Vault,
        session_for: Callable[[str], aiohttp.ClientSession],
    ) -> None:
        self._tokens = tokens
        self._vault = vault
        self._session_for = session_for
        self._memory: dict[str, Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def access_token(self, key: str, grant: Grant) -> str:
        token = self._memory.get(key)
        if token is not None and token.fresh():
            return token.access_token
        async with self._locks.setdefault(key, asyncio.Lock()):
            token = self._memory.get(key)
            if token is None or not token.fresh():
                token = await self._shared_token(key, grant)
                self._memory[key] = token
            return token.access_token

    async def invalidate(self, key: str, access_token: str) -> None:
        """The CRM answered 401 to this token: drop it, unless it was already replaced."""
        token = self._memory.get(key)
        if token is not None and token.access_token == access_token:
            del self._memory[key]
        await self._tokens.expire(key, hashlib.sha256(access_token.encode()).hexdigest())

    async def _shared_token(self, key: str, grant: Grant) -> Token:
        row = await self._tokens.get(key)
        if row is not None and row.state == "needs_reauth":
            raise _reauth_error(key, row.reason)
        if row is not None and row.ciphertext:
            token = self._unseal(key, row)
            if token.fresh():
                return token
        reauth_reason: str | None = None
        async with self._tokens.locked(key) as held:
            current = self._unseal(key, held.row) if held.row.ciphertext else None
            if held.row.state == "needs_reauth":
                reauth_reason = held.row.reason or "credentials refused"
            elif current is not None and current.fresh():
                return current  # another worker refreshed it while we waited for the lock
            else:
                try:
                    token = await self._request(grant, current)
                except _Refused as refused:
                    reauth_reason = refused.reason
                    await held.needs_reauth(refused.reason)
                else:
                    await held.save(token.seal(self._vault, key), token.hash, token.expires_at)
                    return token
        # Outside the transaction, so that the needs_reauth mark is committed.
        raise _reauth_error(key, reauth_reason)

    def _unseal(self, key: str, row: TokenRow) -> Token:
        assert row.ciphertext is not None
        token = Token.unseal(self._vault, key, row.ciphertext)
        # The row's expiry wins: a 401 seen by any worker expires the token there.
        if row.expires_at is not None and row.expires_at < token.expires_at:
            token = replace(token, expires_at=row.expires_at)
        return token

    async def _request(self, grant: Grant, current: Token | None) -> Token:
        session = self._session_for(grant.token_url)
        try:
            async with session.post(
                grant.token_url,
                data=grant.form(current),
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=30, connect=10),
                allow_redirects=False,
            ) as resp:
                status, text = resp.status, await resp.text()
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"token endpoint {grant.token_url} unreachable: {type(exc).__name__}"
            ) from None
        body = _json(text)
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            remember_secrets([str(body["access_token"]), body.get("refresh_token")])
            ttl = _seconds(body.get("expires_in"), grant.default_ttl_seconds)
            extra = {k: body[k] for k in ("instance_url", "scope", "token_type") if k in body}
            return Token(
                access_token=str(body["access_token"]),
                expires_at=utcnow() + timedelta(seconds=ttl),
                lifetime_seconds=ttl,
                refresh_token=body.get("refresh_token")
                or (current.refresh_token if current else None),
                extra=extra,
            )
        if status in (400, 401, 403):
            raise _Refused(f"token endpoint answered {status}: {_reason(body, text)}")
        # Imported here: the connector runtime itself depends on this package.
        from uwf.connectors.runtime import parse_retry_after

        raise RetryableError(
            f"token endpoint answered {status}: {_reason(body, text)}",
            retry_after=parse_retry_after(retry_after),
            status=status,
        )


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reauth_error(key: str, reason: str | None) -> FatalError:
    connection = key.split(":", 1)[0]
    return FatalError(
        f"connection '{connection}' needs re-authorisation: {reason or 'credentials refused'}; "
        f"fix its credentials (or run `uwf connections reauth {connection}`)",
        connection=connection,
    )


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _seconds(value: Any, default: float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


def _reason(body: Any, text: str) -> str:
    if isinstance(body, dict):
        parts = [
            body.get("error"),
            body.get("error_description"),
            body.get("message"),
            body.get("status") if body.get("status") != "error" else None,
        ]
        found = [str(p) for p in parts if p]
        if found:
            return ": ".join(found)[:500]
    return text.strip()[:200] or "no details"
