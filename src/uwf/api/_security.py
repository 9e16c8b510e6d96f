"""Who is calling, and may they do this? Authentication and authorisation of API routes.

Every route of the API (except `/healthz`, and the webhook routes, which check senders'
signatures instead) declares the scope it needs with `Requires(scope)`. The dependency:

1. authenticates the bearer: the bootstrap admin key (`UWF_ADMIN_KEY`), an API key made by
   `uwf keys create` (looked up by its hash; revoked or expired keys are refused), or, when
   `UWF_OIDC_ISSUER` is set, a JWT verified against the issuer's JWKS — else `401`;
2. charges the caller's token bucket — else `429` with `Retry-After`;
3. checks that the caller may act on the tenant in the path, and that the tenant exists —
   else `404`, with the very body an unknown tenant gets, so a key learns nothing about
   tenants it cannot see;
4. checks the scope — else `403` (only ever said to a caller who may see the tenant).
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from uwf.api._accept import tenant_metadata
from uwf.api._oidc import OidcVerifier, TokenRejectedError
from uwf.api._problems import ProblemError
from uwf.errors import NotFoundError
from uwf.service import Service
from uwf.store import KEY_PREFIX, SCOPES, AuditEntry

__all__ = ["Principal", "RateLimiter", "Requires", "audit_entry", "principal_of"]

_bearer = HTTPBearer(auto_error=False)
# Writing `last_used_at` on every request would make each read a write; once a minute is
# precise enough to tell a forgotten key from a used one.
_TOUCH_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `tenants` None: every tenant. `admin` implies every scope."""

    actor: str
    actor_type: str  # "admin" (bootstrap key), "key", "oidc"
    tenants: frozenset[str] | None
    scopes: frozenset[str]
    subject: str  # what the rate limit is counted by: key id, "admin", or "oidc:<sub>"

    def may_see(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ADMIN = Principal("admin", "admin", None, frozenset({"admin"}), "admin")


@dataclass
class RateLimiter:
    """A token bucket per caller, in this process: `rate` requests a second, `burst` at once.

    Processes do not share buckets; with N API processes a caller gets up to N times the rate.
    """

    rate: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, subject: str) -> float | None:
        """Spend one token; None if allowed, else the seconds until a token is available."""
        now = time.monotonic()
        tokens, last = self._buckets.get(subject, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[subject] = (tokens - 1.0, now)
            return None
        self._buckets[subject] = (tokens, now)
        return (1.0 - tokens) / self.rate


def _unauthenticated(detail: str, error: str | None = None) -> ProblemError:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return ProblemError(
        401, "unauthenticated", "Unauthenticated", detail, headers={"WWW-Authenticate": challenge}
    )


async def _authenticate(request: Request, token: str | None) -> Principal:
    if token is None:
        raise _unauthenticated("send `Authorization: Bearer <API key>`")
    state = request.app.state
    if hmac.compare_digest(token.encode(), state.admin_key.encode()):
        return ADMIN
    service: Service = state.service
    if token.startswith(KEY_PREFIX):
        key = await service.store.keys.by_secret(token)
        # One message for unknown, revoked and expired keys: the caller learns only "no".
        if key is None or key.status() != "active":
            raise _unauthenticated("the API key is not valid", "invalid_token")
        last_touch: dict[str, float] = state.key_touches
        if time.monotonic() - last_touch.get(key.id, -math.inf) > _TOUCH_EVERY:
            last_touch[key.id] = time.monotonic()
            await service.store.keys.touch(key.id)
        return Principal(
            actor=f"key:{key.id} ({key.name})",
            actor_type="key",
            tenants=None if key.tenants is None else frozenset(key.tenants),
            scopes=frozenset(key.scopes),
            subject=key.id,
        )
    verifier: OidcVerifier | None = state.oidc
    if verifier is not None and token.count(".") == 2:
        try:
            claims = await verifier.verify(token)
        except TokenRejectedError as exc:
            raise _unauthenticated(
                f"the bearer token is not valid: {exc}", "invalid_token"
            ) from None
        subject = f"oidc:{claims.subject}"
        return Principal(
            actor=subject,
            actor_type="oidc",
            tenants=claims.tenants,
            scopes=frozenset(s for s in claims.scopes if s in SCOPES),
            subject=subject,
        )
    raise _unauthenticated("the API key is not valid", "invalid_token")


def Requires(scope: str) -> Any:
    """The dependency a route declares: authenticate, rate-limit, check tenant and scope.

    Use as `dependencies=[Requires("executions:read")]`, or as a parameter's default to get
    the `Principal`. The scope is kept on the dependency (`uwf_scope`) so tests can check that
    every route declares one.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'")

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = await _authenticate(request, credentials.credentials if credentials else None)
        wait = request.app.state.limiter.take(principal.subject)
        if wait is not None:
            raise ProblemError(
                429,
                "rate-limited",
                "Too many requests",
                "this caller's request rate is over the limit; retry after the given delay",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        tenant = request.path_params.get("tenant")
        if tenant is not None:
            if not principal.may_see(tenant):
                # Exactly what `tenant_metadata` says of a tenant that does not exist.
                raise NotFoundError(f"unknown tenant '{tenant}'")
            # Kept for the route: one request reads the active metadata once.
            request.state.metadata = await tenant_metadata(request.app.state.service.store, tenant)
        if not principal.has(scope):
            raise ProblemError(
                403,
                "forbidden",
                "Forbidden",
                f"this route needs the scope '{scope}' (or 'admin'), which the caller lacks",
            )
        request.state.principal = principal
        return principal

    dependency.uwf_scope = scope  # type: ignore[attr-defined]
    marker: DependsParam = Depends(dependency)
    return marker


def principal_of(request: Request) -> Principal:
    """The caller that `Requires` let through on this request."""
    principal: Principal = request.state.principal
    return principal


def audit_entry(request: Request, action: str, tenant: str | None, **details: Any) -> AuditEntry:
    """An audit row for what the caller of `request` is doing (target filled in by the store)."""
    principal = principal_of(request)
    return AuditEntry(
        actor=principal.actor,
        actor_type=principal.actor_type,
        action=action,
        tenant=tenant,
        request_id=getattr(request.state, "request_id", None),
        details=details or None,
    )
