"""Optional OIDC bearer tokens: JWTs verified against the configured issuer's JWKS.

Claims used (documented in docs/security.md): `sub` (the actor in the audit log), the tenants
claim (`uwf_tenants` by default: a list of tenant names, or `"*"` for every tenant) and the
scope claim (`scope` by default: space-separated, as OAuth 2.0 issues it; a list works too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

__all__ = ["OidcClaims", "OidcVerifier", "TokenRejectedError"]

# Asymmetric algorithms only: HS256 would let anyone holding the JWKS' "k" sign tokens, and
# "none" would let anyone at all.
_ALGORITHMS = ["RS256", "ES256"]


class TokenRejectedError(Exception):
    """The bearer token is not a valid token of the configured issuer (the message says why)."""


@dataclass(frozen=True, slots=True)
class OidcClaims:
    subject: str
    tenants: frozenset[str] | None  # None: every tenant
    scopes: frozenset[str]


class OidcVerifier:
    """Verifies tokens of one issuer for one audience; the JWKS is fetched once and cached.

    Without `jwks_url`, it is read from the issuer's `/.well-known/openid-configuration`.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        *,
        tenants_claim: str = "uwf_tenants",
        scope_claim: str = "scope",
        leeway: float = 30.0,
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self._jwks_url = jwks_url
        self._tenants_claim, self._scope_claim = tenants_claim, scope_claim
        self._leeway = leeway
        self._client: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()

    async def _jwk_client(self) -> jwt.PyJWKClient:
        async with self._lock:
            if self._client is None:
                url = self._jwks_url or await self._discover()
                self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
            return self._client

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
                response.raise_for_status()
                jwks_uri = response.json()["jwks_uri"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise TokenRejectedError(f"the issuer's configuration is unavailable ({exc})") from None
        if not isinstance(jwks_uri, str):
            raise TokenRejectedError("the issuer's configuration has no jwks_uri")
        return jwks_uri

    async def verify(self, token: str) -> OidcClaims:
        """The caller's claims, or TokenRejectedError (expired, wrong audience or issuer,
        unknown key id, unsupported algorithm, bad signature, missing claims)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejectedError("not a JWT") from None
        if header.get("alg") not in _ALGORITHMS:
            raise TokenRejectedError(f"algorithm must be one of {', '.join(_ALGORITHMS)}")
        client = await self._jwk_client()
        try:
            # PyJWKClient fetches with urllib, which blocks: keep it off the event loop.
            signing_key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientError as exc:
            raise TokenRejectedError(f"no usable signing key ({exc})") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=_ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejectedError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejectedError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejectedError("the token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise TokenRejectedError(str(exc)) from None
        return OidcClaims(
            subject=str(claims["sub"]),
            tenants=self._tenants(claims.get(self._tenants_claim)),
            scopes=self._scopes(claims.get(self._scope_claim)),
        )

    @staticmethod
    def _tenants(value: Any) -> frozenset[str] | None:
        if value == "*":
            return None
        if isinstance(value, str):
            return frozenset({value})
        if isinstance(value, list):
            return frozenset(v for v in value if isinstance(v, str))
        return frozenset()  # no claim: no tenant

    @staticmethod
    def _scopes(value: Any) -> frozenset[str]:
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(v for v in value if isinstance(v, str))
        return frozenset()
