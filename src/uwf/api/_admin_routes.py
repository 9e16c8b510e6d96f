"""Routes for callers' keys and the audit log: `/v1/keys` (admin) and `/v1/audit`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from uwf.api._problems import ProblemError
from uwf.api._security import Principal, Requires, audit_entry
from uwf.errors import NotFoundError
from uwf.service import Service
from uwf.store import SCOPES, ApiKey, AuditRecord, utcnow

__all__ = ["admin_router"]

admin_router = APIRouter()
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,99}$"


class KeyCreate(BaseModel):
    """A new key: for `tenants` (omit or null: every tenant, a service key) with `scopes`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="What the key is for, e.g. `crm-bridge`")
    tenants: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))
    expires_at: datetime | None = Field(default=None, description="RFC 3339, with an offset")


class KeyView(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    tenants: list[str] | None = Field(description="null: every tenant")
    scopes: list[str]
    status: str = Field(description="`active`, `revoked` or `expired`")
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls(
            **{
                **key.to_dict(),
                "created_at": key.created_at,
                "expires_at": key.expires_at,
                "revoked_at": key.revoked_at,
                "last_used_at": key.last_used_at,
            }
        )


class KeyCreated(KeyView):
    key: str = Field(description="The secret. Shown this once; only its hash is stored")


class AuditView(BaseModel):
    id: str
    at: datetime
    actor: str
    actor_type: str
    tenant: str | None
    action: str
    target: str | None
    outcome: str
    request_id: str | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditView:
        return cls(**{name: getattr(record, name) for name in AuditRecord.__slots__})


class AuditPage(BaseModel):
    items: list[AuditView]
    next_cursor: str | None


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _require_all_tenants(principal: Principal) -> None:
    # A key limited to some tenants could otherwise mint a key for every tenant.
    if principal.tenants is not None:
        raise ProblemError(
            403, "forbidden", "Forbidden", "managing keys needs an admin key for every tenant"
        )


@admin_router.post("/v1/keys", response_model=KeyCreated, status_code=201, tags=["admin"])
async def create_key(
    body: KeyCreate, request: Request, principal: Annotated[Principal, Requires("admin")]
) -> KeyCreated:
    """Create an API key. The answer holds the key itself; it is never shown again."""
    _require_all_tenants(principal)
    unknown = sorted(set(body.scopes) - set(SCOPES))
    if unknown:
        raise ProblemError(
            422,
            "invalid-input",
            "Invalid input",
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}",
        )
    if body.expires_at is not None and (
        body.expires_at.tzinfo is None or body.expires_at <= utcnow()
    ):
        raise ProblemError(
            422,
            "invalid-input",
            "Invalid input",
            "expires_at must be a future time with a UTC offset",
        )
    store = _service(request).store
    if body.tenants is not None:
        active = await store.active_metadata()
        known = set(active[1].tenants) if active else set()
        missing = sorted(set(body.tenants) - known)
        if missing:
            raise ProblemError(
                422, "invalid-input", "Invalid input", f"unknown tenant(s): {', '.join(missing)}"
            )
    key, secret = await store.keys.create(
        name=body.name,
        tenants=body.tenants,
        scopes=body.scopes,
        created_by=principal.actor,
        expires_at=body.expires_at,
        audit=audit_entry(request, "key.created", _single(body.tenants)),
    )
    return KeyCreated(**KeyView.of(key).model_dump(), key=secret)


def _single(tenants: list[str] | None) -> str | None:
    # The audit row's tenant: the key's tenant when it has exactly one.
    return tenants[0] if tenants is not None and len(tenants) == 1 else None


@admin_router.get("/v1/keys", response_model=list[KeyView], tags=["admin"])
async def list_keys(
    request: Request, principal: Annotated[Principal, Requires("admin")]
) -> list[KeyView]:
    """Every key with its status, prefix and scopes; never a secret or a hash."""
    _require_all_tenants(principal)
    return [KeyView.of(k) for k in await _service(request).store.keys.list()]


@admin_router.delete("/v1/keys/{key_id}", response_model=KeyView, tags=["admin"])
async def revoke_key(
    key_id: str, request: Request, principal: Annotated[Principal, Requires("admin")]
) -> KeyView:
    """Revoke a key at once; requests with it answer `401` from now on. Idempotent."""
    _require_all_tenants(principal)
    store = _service(request).store
    existing = await store.keys.get(key_id)
    if existing is None:
        raise NotFoundError(f"no key '{key_id}'")
    revoked = await store.keys.revoke(
        key_id,
        audit=audit_entry(
            request, "key.revoked", _single(list(existing.tenants) if existing.tenants else None)
        ),
    )
    assert revoked is not None
    return KeyView.of(revoked)


@admin_router.get("/v1/audit", response_model=AuditPage, tags=["admin"])
async def list_audit(
    request: Request,
    principal: Annotated[Principal, Requires("executions:read")],
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339; rows at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=_UUID)] = None,
) -> AuditPage:
    """The audit log, newest first. An admin key for every tenant sees every row; any other
    caller (`executions:read` suffices) only the rows of the tenants it may see."""
    if since is not None and since.tzinfo is None:
        raise ProblemError(400, "invalid-request", "Invalid request", "since needs a UTC offset")
    sees_all = principal.tenants is None and principal.has("admin")
    if tenant is not None:
        if not principal.may_see(tenant):
            raise NotFoundError(f"unknown tenant '{tenant}'")
        tenants: list[str] | None = [tenant]
    else:
        tenants = None if principal.tenants is None else sorted(principal.tenants)
    page, next_cursor = await _service(request).store.audit.list(
        tenants=tenants,
        tenant_rows_only=not sees_all,
        action=action,
        since=since,
        limit=limit,
        cursor=cursor,
    )
    return AuditPage(items=[AuditView.of(r) for r in page], next_cursor=next_cursor)
