"""`uwf secrets`: CRM secrets stored encrypted in the Pipe DB, and key rotation.

Values are read from standard input (piped) or a hidden prompt, never from the command line,
where they would land in shell history and `ps`. Nothing here ever prints a value.
"""

from __future__ import annotations

import getpass
import re
import sys
from typing import Annotated

import typer
from rich.console import Console

from uwf._cli_admin import cli_actor
from uwf.settings import Settings

secrets_app = typer.Typer(
    no_args_is_help=True,
    help="CRM secrets stored encrypted per tenant (`{stored: NAME}` in metadata), key rotation.",
)
# Messages carry paths and ids to copy: never hard-wrapped at the terminal width.
err = Console(stderr=True, soft_wrap=True)

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _usage(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def _check_names(tenant: str, name: str | None = None) -> None:
    if not _TENANT.fullmatch(tenant):
        raise _usage(f"'{tenant}' is not a tenant name (lower-case letters, digits, - and _)")
    if name is not None and not _NAME.fullmatch(name):
        raise _usage(f"'{name}' is not a secret name (letters, digits, '.', '-', '_')")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name}: ")
        if value != getpass.getpass(f"value of {name} (again): "):
            raise _usage("the two values differ; nothing was stored")
    else:
        value = sys.stdin.read()
        # `echo value | uwf secrets set …` adds one newline that is not part of the secret.
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise _usage("empty value; nothing was stored")
    return value


@secrets_app.command("set")
def secrets_set(
    tenant: Annotated[str, typer.Argument(help="Tenant the secret belongs to")],
    name: Annotated[str, typer.Argument(help="Secret name, as metadata refers to it")],
) -> None:
    """Store a secret for a tenant, encrypted (value from stdin or a hidden prompt).

    Example: `printf %s "$TOKEN" | uwf secrets set acme zendesk_token`, then in a connection
    `token: {stored: zendesk_token}`.
    """
    from uwf.auth import seal_secret
    from uwf.cli import _run
    from uwf.service import load_vault
    from uwf.store import AuditEntry, Store

    _check_names(tenant, name)
    value = _read_value(name)
    settings = Settings()

    async def go() -> tuple[bool, str]:
        vault = load_vault(settings)
        store = await Store.open(settings.resolved_database_url)
        try:
            active = await store.active_metadata()
            if active is not None and tenant not in active[1].tenants:
                raise _usage(f"unknown tenant '{tenant}' (known: {', '.join(active[1].tenants)})")
            created = await store.secrets.put(
                tenant, name, seal_secret(vault, tenant, name, value), vault.key_id
            )
            await store.audit.write(
                AuditEntry(
                    actor=cli_actor(),
                    actor_type="cli",
                    action="credentials.changed",
                    tenant=tenant,
                    target=f"secret:{name}",
                    details={"change": "created" if created else "replaced"},
                )
            )
            return created, vault.key_id
        finally:
            await store.close()

    created, key_id = _run(go)
    verb = "stored" if created else "replaced"
    err.print(f"{verb} secret {name} of {tenant} (key {key_id})", highlight=False)


@secrets_app.command("list")
def secrets_list(
    tenant: Annotated[str, typer.Argument(help="Tenant whose secrets to list")],
) -> None:
    """List a tenant's stored secrets: name, key id, last change. Never the values."""
    from uwf.cli import _run
    from uwf.store import Store

    _check_names(tenant)

    async def go() -> list[tuple[str, str, str]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            rows = await store.secrets.list(tenant)
            return [(r.name, r.key_id, r.updated_at.isoformat(timespec="seconds")) for r in rows]
        finally:
            await store.close()

    rows = _run(go)
    if not rows:
        err.print(f"{tenant}: no stored secrets", highlight=False)
        return
    width = max(len(name) for name, _, _ in rows)
    sys.stdout.write(f"{'NAME':<{width}}  KEY ID        UPDATED\n")
    for name, key_id, updated in rows:
        sys.stdout.write(f"{name:<{width}}  {key_id:<12}  {updated}\n")


@secrets_app.command("delete")
def secrets_delete(
    tenant: Annotated[str, typer.Argument(help="Tenant the secret belongs to")],
    name: Annotated[str, typer.Argument(help="Secret name")],
) -> None:
    """Delete a stored secret (connections that refer to it fail until it is set again)."""
    from uwf.cli import _run
    from uwf.store import AuditEntry, Store

    _check_names(tenant, name)

    async def go() -> bool:
        store = await Store.open(Settings().resolved_database_url)
        try:
            deleted = await store.secrets.delete(tenant, name)
            if deleted:
                await store.audit.write(
                    AuditEntry(
                        actor=cli_actor(),
                        actor_type="cli",
                        action="credentials.changed",
                        tenant=tenant,
                        target=f"secret:{name}",
                        details={"change": "deleted"},
                    )
                )
            return deleted
        finally:
            await store.close()

    if not _run(go):
        raise _usage(f"tenant '{tenant}' has no stored secret '{name}'")
    err.print(f"deleted secret {name} of {tenant}", highlight=False)


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret and OAuth token under the current key.

    Set the new key as `UWF_SECRET_KEY` and the old one in `UWF_SECRET_KEYS_OLD` (or list it
    in `$UWF_HOME/secret.keys.old`), run this, then remove the old key.
    """
    from uwf.auth import rotate_keys
    from uwf.cli import _run
    from uwf.service import load_vault
    from uwf.store import AuditEntry, Store

    settings = Settings()

    async def go() -> tuple[str, int, int, int, int, tuple[str, ...]]:
        vault = load_vault(settings)
        store = await Store.open(settings.resolved_database_url)
        try:
            report = await rotate_keys(store.secrets, store.tokens, vault)
            await store.audit.write(
                AuditEntry(
                    actor=cli_actor(),
                    actor_type="cli",
                    action="credentials.changed",
                    target="secrets:rotate",
                    outcome="failed" if report.failed else "succeeded",
                    details={
                        "key_id": report.key_id,
                        "secrets": report.secrets,
                        "tokens": report.tokens,
                        "inputs": report.inputs,
                        "failed": len(report.failed),
                    },
                )
            )
            return (
                report.key_id,
                report.secrets,
                report.tokens,
                report.inputs,
                report.unchanged,
                report.failed,
            )
        finally:
            await store.close()

    key_id, secrets, tokens, inputs, unchanged, failed = _run(go)
    sys.stdout.write(
        f"re-encrypted {secrets} stored secret(s), {tokens} OAuth token(s) and the sensitive "
        f"input of {inputs} execution(s) under key {key_id}; {unchanged} already used it\n"
    )
    for problem in failed:
        err.print(f"[red]could not re-encrypt[/red] {problem}", highlight=False)
    if failed:
        raise typer.Exit(1)
    sys.stdout.write("the old keys are no longer needed\n")
