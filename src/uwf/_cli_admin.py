"""`uwf keys` and `uwf audit`: callers' API keys and the audit log, from the command line."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console

from uwf.settings import Settings

__all__ = ["audit_command", "cli_actor", "keys_app"]

keys_app = typer.Typer(
    no_args_is_help=True, help="Callers' API keys: create (shown once), list, revoke."
)
# Messages carry paths and ids to copy: never hard-wrapped at the terminal width.
err = Console(stderr=True, soft_wrap=True)
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def cli_actor() -> str:
    """Who the audit log names for a command run here: `cli:` and the OS user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return f"cli:{user}"


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. crm-bridge")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="actions:write, executions:read, metadata:write or admin (repeat for more)"
        ),
    ],
    tenant: Annotated[
        list[str] | None, typer.Option(help="A tenant the key may act on (repeat for more)")
    ] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="A service key for every tenant")
    ] = False,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d, 12h, 30m; default: no expiry")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create an API key and print it. It is shown this once; only its hash is stored."""
    from uwf.store import SCOPES, AuditEntry, Store, utcnow

    if bool(tenant) == all_tenants:
        raise _fail("give --tenant (one or more) or --all-tenants")
    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        raise _fail(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    expires_at = None
    if expires_in is not None:
        match = _DURATION.fullmatch(expires_in)
        if match is None or int(match.group(1)) == 0:
            raise _fail(f"--expires-in '{expires_in}' is not like 90d, 12h, 30m or 45s")
        expires_at = utcnow() + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    tenants = None if all_tenants else sorted(set(tenant or []))
    actor = cli_actor()

    async def go() -> tuple[dict[str, Any], str] | str:
        store = await Store.open(Settings().resolved_database_url)
        try:
            if tenants is not None:
                active = await store.active_metadata()
                known = set(active[1].tenants) if active else set()
                missing = sorted(set(tenants) - known)
                if missing:
                    return f"unknown tenant(s): {', '.join(missing)}"
            key, secret = await store.keys.create(
                name=name,
                tenants=tenants,
                scopes=scope,
                created_by=actor,
                expires_at=expires_at,
                audit=AuditEntry(
                    actor=actor,
                    actor_type="cli",
                    action="key.created",
                    tenant=tenants[0] if tenants and len(tenants) == 1 else None,
                ),
            )
            return key.to_dict(), secret
        finally:
            await store.close()

    result = asyncio.run(go())
    if isinstance(result, str):
        raise _fail(result)
    listed, secret = result
    if as_json:
        _print_json({**listed, "key": secret})
        return
    sys.stdout.write(secret + "\n")
    where = "every tenant" if tenants is None else ", ".join(tenants)
    err.print(
        f"created key {listed['id']} ({name}) for {where} with {', '.join(listed['scopes'])}. "
        "Keep it now: it is not shown again.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List keys with their status and prefix (never the key itself)."""
    from uwf.store import Store

    async def go() -> list[dict[str, Any]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            return [k.to_dict() for k in await store.keys.list()]
        finally:
            await store.close()

    rows = asyncio.run(go())
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        tenants = "*" if row["tenants"] is None else ",".join(row["tenants"])
        sys.stdout.write(
            f"{row['id']}  {row['prefix']}…  {row['status']:<7}  {row['name']}  "
            f"tenants={tenants}  scopes={','.join(row['scopes'])}\n"
        )
    if not rows:
        err.print("no keys (the bootstrap admin key, UWF_ADMIN_KEY, is not listed)")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (uwf keys list)")],
) -> None:
    """Revoke a key at once: requests with it answer 401 from now on."""
    from uwf.store import AuditEntry, Store

    actor = cli_actor()

    async def go() -> str | None:
        store = await Store.open(Settings().resolved_database_url)
        try:
            existing = await store.keys.get(key_id)
            if existing is None:
                return None
            tenant = (
                existing.tenants[0] if existing.tenants and len(existing.tenants) == 1 else None
            )
            revoked = await store.keys.revoke(
                key_id,
                audit=AuditEntry(
                    actor=actor, actor_type="cli", action="key.revoked", tenant=tenant
                ),
            )
            return None if revoked is None else revoked.name
        finally:
            await store.close()

    name = asyncio.run(go())
    if name is None:
        raise _fail(f"no key '{key_id}'", 1)
    err.print(f"revoked key {key_id} ({name})", highlight=False)


def audit_command(
    tenant: Annotated[str | None, typer.Option(help="Only rows of this tenant")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. key.created")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only rows at or after this time (ISO 8601, UTC if naive)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many rows")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print the audit log, newest first: who did what, when, to which tenant, and how."""
    from datetime import UTC

    from uwf.store import AUDIT_ACTIONS, Store

    if action is not None and action not in AUDIT_ACTIONS:
        raise _fail(f"unknown action '{action}'; known: {', '.join(sorted(AUDIT_ACTIONS))}")
    since_at = None
    if since is not None:
        try:
            since_at = datetime.fromisoformat(since)
        except ValueError:
            raise _fail(f"--since '{since}' is not an ISO 8601 time") from None
        if since_at.tzinfo is None:
            since_at = since_at.replace(tzinfo=UTC)

    async def go() -> list[dict[str, Any]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            rows: list[dict[str, Any]] = []
            cursor: str | None = None
            while len(rows) < limit:
                page, cursor = await store.audit.list(
                    tenants=None if tenant is None else [tenant],
                    action=action,
                    since=since_at,
                    limit=min(200, limit - len(rows)),
                    cursor=cursor,
                )
                rows.extend(r.to_dict() for r in page)
                if cursor is None:
                    break
            return rows
        finally:
            await store.close()

    rows = asyncio.run(go())
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        sys.stdout.write(
            f"{row['at'][:19]}  {row['action']:<20} {row['outcome']:<9} "
            f"tenant={row['tenant'] or '-'}  target={row['target'] or '-'}  by {row['actor']}\n"
        )
    if not rows:
        err.print("no audit rows match")
