"""The `uwf` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console

from uwf._cli_admin import audit_command, cli_actor, keys_app
from uwf._cli_secrets import secrets_app
from uwf.errors import UwfError
from uwf.metadata import MetadataBundle
from uwf.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
metadata_app = typer.Typer(no_args_is_help=True, help="Validate, apply and export metadata.")
executions_app = typer.Typer(no_args_is_help=True, help="Inspect executions.")
sandbox_app = typer.Typer(no_args_is_help=True, help="The built-in CRM sandboxes.")
db_app = typer.Typer(no_args_is_help=True, help="The Pipe DB.")
connections_app = typer.Typer(no_args_is_help=True, help="Tenants' CRM connections.")
connectors_app = typer.Typer(no_args_is_help=True, help="Connector specs (CRM APIs as data).")
app.add_typer(metadata_app, name="metadata")
app.add_typer(executions_app, name="executions")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(db_app, name="db")
app.add_typer(connections_app, name="connections")
app.add_typer(connectors_app, name="connectors")
app.add_typer(keys_app, name="keys")
app.command("audit")(audit_command)
app.add_typer(secrets_app, name="secrets")

# Messages carry paths and ids to copy: never hard-wrapped at the terminal width.
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def main() -> None:
    from uwf.observability import configure_logging

    # Logs go to stderr, so what a command prints on stdout stays machine-readable; only
    # `serve` and `worker` log at the configured level.
    configure_logging("warning")
    app()


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coro())  # type: ignore[arg-type]
    except UwfError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (as `uwf serve` gets it from uvicorn), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on Windows
        return None
    return uvloop.new_event_loop


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


# -- serve / worker ---------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: $UWF_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default: $UWF_PORT or 8080")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve the API only")] = False,
) -> None:
    """Serve the API, an in-process worker and the CRM sandboxes on one port."""
    import uvicorn

    from uwf.api import create_app
    from uwf.observability import configure_logging

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    key, generated = settings.ensure_admin_key()
    if generated:
        err.print(
            f"Admin API key (shown once, kept in {settings.home / 'admin.key'}):\n  {key}",
            highlight=False,
        )
    application = create_app(settings, admin_key=key, worker=not no_worker, settle_heap=True)
    err.print(f"UWF on {settings.base_url}  (API docs: {settings.base_url}/docs)", highlight=False)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=15,
    )


@app.command()
def worker() -> None:
    """Run a worker alone (no API), sharing the Pipe DB named by UWF_DATABASE_URL."""
    import signal

    from uwf.observability import configure_logging
    from uwf.service import Service

    settings = Settings()
    configure_logging(settings.log_level)

    async def go() -> None:
        # Handlers first: a SIGTERM that arrives while starting up still drains gracefully.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = await Service.start(settings, worker=True, sandbox_base=_sandbox_base(settings))
        Service.settle_heap()
        await stop.wait()
        await service.stop()

    _run(go)


def _sandbox_base(settings: Settings) -> str:
    # A separate worker reaches the sandboxes where `uwf serve` mounts them.
    return f"{settings.base_url}/sandbox"


# -- metadata ---------------------------------------------------------------------------------


def _valid_bundle(directory: Path) -> MetadataBundle:
    """The directory's metadata, or exit 1 after printing every problem in it."""
    from uwf.metadata import validate_directory

    bundle, problems = validate_directory(directory)
    if bundle is None:
        for problem in problems:
            err.print(str(problem), highlight=False, soft_wrap=True)
        err.print(f"[red]{len(problems)} problem(s)[/red]; nothing was applied")
        raise typer.Exit(1)
    return bundle


@metadata_app.command("validate")
def metadata_validate(
    directory: Annotated[Path, typer.Argument(help="A directory of metadata YAML files")],
) -> None:
    """Report every problem in a metadata directory (file, line, path, hint)."""
    bundle = _valid_bundle(directory)
    err.print(
        f"OK: {len(bundle.tenants)} tenant(s), {len(bundle.connections)} connection(s), "
        f"{len(bundle.workflows)} workflow(s); digest {bundle.digest[:12]}",
        highlight=False,
    )


@metadata_app.command("apply")
def metadata_apply(
    directory: Annotated[Path, typer.Argument(help="A directory of metadata YAML files")],
) -> None:
    """Validate a metadata directory and store it as a new immutable version."""
    from uwf.store import AuditEntry, Store

    bundle = _valid_bundle(directory)
    audit = AuditEntry(
        actor=cli_actor(),
        actor_type="cli",
        action="metadata.applied",
        details={"digest": bundle.digest, "tenants": sorted(bundle.tenants)},
    )

    async def go() -> tuple[int, bool]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            return await store.apply_metadata(bundle, str(directory), audit=audit)
        finally:
            await store.close()

    version, created = _run(go)
    if created:
        err.print(f"applied as version {version}")
    else:
        err.print(f"unchanged: version {version} already has this content")


@metadata_app.command("export")
def metadata_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write")],
    version: Annotated[int | None, typer.Option(help="Default: the active version")] = None,
) -> None:
    """Write a stored metadata version back to YAML files (one per tenant, plus shared)."""
    from uwf.store import Store

    async def go() -> tuple[int, dict[str, Any]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            if version is None:
                active = await store.active_metadata()
                if active is None:
                    raise UwfError("no metadata has been applied yet")
                return active[0], active[1].to_document()
            bundle = await store.metadata(version)
            if bundle is None:
                raise UwfError(f"no metadata version {version}")
            return version, bundle.to_document()
        finally:
            await store.close()

    number, document = _run(go)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict[str, Any]]] = {}
    for doc in document["documents"]:
        owner = doc.get("tenant") or (doc["name"] if doc["kind"] == "tenant" else "shared")
        files.setdefault(owner, []).append(doc)
    for owner, docs in files.items():
        path = out / f"{owner}.yaml"
        path.write_text(
            f"# Exported from UWF metadata version {number}\n"
            + yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
        )
    err.print(f"wrote version {number} to {out} ({len(files)} file(s))")


@metadata_app.command("versions")
def metadata_versions() -> None:
    """List the stored metadata versions (the last one is active)."""
    from uwf.store import Store

    async def go() -> list[dict[str, Any]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            return await store.metadata_versions()
        finally:
            await store.close()

    for row in _run(go):
        created = row["created_at"].isoformat(timespec="seconds")
        sys.stdout.write(f"{row['version']:>4}  {created}  {row['digest'][:12]}  {row['source']}\n")


@metadata_app.command("diff")
def metadata_diff(
    old: Annotated[int, typer.Argument(help="A version number")],
    new: Annotated[int, typer.Argument(help="A later version number")],
) -> None:
    """Show what changed between two stored metadata versions (a unified diff of their YAML)."""
    import difflib

    from uwf.store import Store

    async def go() -> tuple[str, str]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            texts = []
            for version in (old, new):
                bundle = await store.metadata(version)
                if bundle is None:
                    raise UwfError(f"no metadata version {version}")
                texts.append(
                    yaml.safe_dump_all(
                        bundle.to_document()["documents"], sort_keys=False, allow_unicode=True
                    )
                )
            return texts[0], texts[1]
        finally:
            await store.close()

    before, after = _run(go)
    sys.stdout.writelines(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"version {old}",
            tofile=f"version {new}",
        )
    )


@metadata_app.command("schema")
def metadata_schema() -> None:
    """Print the JSON Schema of a metadata document (for editors and CI)."""
    from uwf.metadata import metadata_json_schema

    _print_json(metadata_json_schema())


# -- run / executions -------------------------------------------------------------------------


@app.command("run")
def run_once(
    workflow: Annotated[str, typer.Argument()],
    tenant: Annotated[str, typer.Option(help="Tenant name")],
    input_json: Annotated[str, typer.Option("--input", help="The input as JSON")] = "{}",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result")] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read from the CRM, write nothing: print the plan")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="--dry-run: print JSON")] = False,
) -> None:
    """Run one action now, in this process, and print the execution.

    The built-in sandboxes are started for the run on a loopback port, so the example
    connections work without `uwf serve`. With --dry-run, reads are sent, writes are not:
    the requests that would be sent and each update's `current → new` values are printed,
    and no execution is stored.
    """
    from uwf._oneoff import run_action

    try:
        data = json.loads(input_json)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] --input is not valid JSON: {exc}")
        raise typer.Exit(2) from None
    if dry_run:
        from uwf._cli_governance import print_dry_run
        from uwf._governance import dry_run_action

        plan = _run(lambda: dry_run_action(Settings(), tenant, workflow, data, timeout))
        print_dry_run(plan, as_json)
        if plan["status"] != "succeeded":
            raise typer.Exit(1)
        return
    result = _run(lambda: run_action(Settings(), tenant, workflow, data, timeout))
    _print_json(result)
    if result.get("status") != "succeeded":
        raise typer.Exit(1)


@executions_app.command("list")
def executions_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, …")] = None,
    workflow: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    dead: Annotated[bool, typer.Option("--dead", help="Dead letters only")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List executions, newest first."""
    from uwf.store import EXECUTION_STATUSES, Store

    if dead:
        status = "dead"

    if status is not None and status not in EXECUTION_STATUSES:
        err.print(
            f"[red]error:[/red] unknown status '{status}' (known: {', '.join(EXECUTION_STATUSES)})"
        )
        raise typer.Exit(2)

    async def go() -> list[dict[str, Any]]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            page, _ = await store.list_executions(
                tenant=tenant, status=status, workflow=workflow, limit=limit
            )
            return [
                {
                    "id": e.id,
                    "tenant": e.tenant,
                    "workflow": e.workflow,
                    "status": e.status,
                    "created_at": e.created_at.isoformat(),
                    "error": (e.error or {}).get("message"),
                }
                for e in page
            ]
        finally:
            await store.close()

    rows = _run(go)
    if as_json:
        _print_json(rows)
        return
    # Plain lines, never truncated: the id is what `executions show` takes.
    for row in rows:
        error = f"  {row['error']}" if row["error"] else ""
        sys.stdout.write(
            f"{row['id']}  {row['status']:<9}  {row['tenant']}/{row['workflow']}  "
            f"{row['created_at'][:19]}{error}\n"
        )


@executions_app.command("cancel")
def executions_cancel(execution_id: Annotated[str, typer.Argument()]) -> None:
    """Cancel an execution: at once, or before its next step if a worker is running it."""
    from uwf.api import cancel_execution
    from uwf.store import AuditEntry, Store

    async def go() -> str:
        store = await Store.open(Settings().resolved_database_url)
        try:
            found = await store.get_execution(execution_id)
            if found is None:
                raise UwfError(f"no execution '{execution_id}'")
            audit = AuditEntry(
                actor=cli_actor(),
                actor_type="cli",
                action="execution.cancelled",
                tenant=found.tenant,
            )
            return (await cancel_execution(store, found.tenant, execution_id, audit=audit)).status
        finally:
            await store.close()

    status = _run(go)
    if status == "cancelled":
        err.print(f"{execution_id}: cancelled")
    else:
        err.print(f"{execution_id}: {status}; it stops before its next step (cancel requested)")


@executions_app.command("replay")
def executions_replay(
    execution_ids: Annotated[list[str], typer.Argument(help="One or more execution ids")],
    from_step: Annotated[
        str | None, typer.Option(help="Run this step and every later one again")
    ] = None,
    current_metadata: Annotated[
        bool, typer.Option("--current-metadata", help="Use the active metadata version")
    ] = False,
) -> None:
    """Replay failed, dead or cancelled executions as new ones (steps that succeeded are kept).

    A running `uwf serve` or `uwf worker` runs them.
    """
    from uwf.api import replay_execution
    from uwf.store import AuditEntry, Store

    async def go() -> list[str]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            made = []
            for execution_id in execution_ids:
                found = await store.get_execution(execution_id)
                if found is None:
                    raise UwfError(f"no execution '{execution_id}'")
                new = await replay_execution(
                    store,
                    found.tenant,
                    execution_id,
                    from_step=from_step,
                    current_metadata=current_metadata,
                    audit=AuditEntry(
                        actor=cli_actor(),
                        actor_type="cli",
                        action="execution.replayed",
                        tenant=found.tenant,
                    ),
                )
                made.append(new.id)
            return made
        finally:
            await store.close()

    for old, new in zip(execution_ids, _run(go), strict=True):
        sys.stdout.write(f"{old} -> {new}\n")


@executions_app.command("show")
def executions_show(execution_id: Annotated[str, typer.Argument()]) -> None:
    """Print one execution with every step's request, response and outcome."""
    from uwf._oneoff import execution_document
    from uwf.store import Store

    async def go() -> dict[str, Any]:
        store = await Store.open(Settings().resolved_database_url)
        try:
            execution = await store.get_execution(execution_id)
            if execution is None:
                raise UwfError(f"no execution '{execution_id}'")
            return await execution_document(store, execution)
        finally:
            await store.close()

    _print_json(_run(go))


# -- connections ------------------------------------------------------------------------------


@connections_app.command("test")
def connections_test(
    name: Annotated[str, typer.Argument(help="Connection name, e.g. acme-zendesk")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Authenticate, make one cheap call, report latency, rate budget and any problem."""
    from uwf._oneoff import check_connection

    report = _run(lambda: check_connection(Settings(), name))
    if as_json:
        _print_json(report)
    else:
        budget = report.get("rate_limit") or {}
        remaining = budget.get("remaining")
        limit = budget.get("limit")
        rate = f"{remaining}/{limit} requests left" if remaining is not None else "not reported"
        verdict = "OK" if report["ok"] else "FAILED"
        sys.stdout.write(
            f"{verdict}: {report['connection']} ({report['connector']}) at "
            f"{report.get('base_url', '?')}\n"
            f"  latency: {report['latency_ms']} ms, HTTP status: {report['status']}\n"
            f"  rate budget: {rate}\n"
        )
        if report["problem"]:
            sys.stdout.write(f"  problem: {report['problem']}\n")
    if not report["ok"]:
        raise typer.Exit(1)


@connections_app.command("reauth")
def connections_reauth(
    name: Annotated[str, typer.Argument(help="Connection name")],
) -> None:
    """Forget a connection's OAuth token and its `needs_reauth` mark (after fixing it)."""
    from uwf.store import AuditEntry, Store

    async def go() -> int:
        store = await Store.open(Settings().resolved_database_url)
        try:
            rows = [r for r in await store.tokens.all() if r.key.split(":", 1)[0] == name]
            for row in rows:
                await store.tokens.reset(row.key)
            if rows:
                active = await store.active_metadata()
                connection = active[1].connections.get(name) if active else None
                await store.audit.write(
                    AuditEntry(
                        actor=cli_actor(),
                        actor_type="cli",
                        action="credentials.changed",
                        tenant=connection.tenant if connection else None,
                        target=name,
                        details={"change": "oauth token reset"},
                    )
                )
            return len(rows)
        finally:
            await store.close()

    count = _run(go)
    err.print(
        f"cleared {count} token record(s) of {name}" if count else f"{name}: nothing to clear"
    )


@connectors_app.command("list")
def connectors_list() -> None:
    """The built-in connectors and the objects and operations each one offers."""
    from uwf.connectors import builtin_connectors

    for spec in builtin_connectors().values():
        objects = ", ".join(
            f"{name} ({'/'.join(obj.operations)})" for name, obj in spec.objects.items()
        )
        sys.stdout.write(f"{spec.id:<12} {spec.name}: {objects}\n")


@connectors_app.command("reference")
def connectors_reference() -> None:
    """Print the connector spec reference (Markdown), generated from its models."""
    from uwf.connectors import reference_markdown

    sys.stdout.write(reference_markdown())


# -- sandbox / db -----------------------------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    crm: Annotated[str, typer.Argument(help="zendesk, salesforce, servicenow, hubspot, …")],
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8090,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
) -> None:
    """Serve one CRM's sandbox alone, at the root path (as the vendor's API host would be)."""
    import uvicorn

    from uwf.sandboxes import SANDBOXES, create_sandbox_app

    if crm not in SANDBOXES:
        err.print(f"[red]error:[/red] no sandbox for '{crm}' (known: {', '.join(SANDBOXES)})")
        raise typer.Exit(2)
    settings = Settings()
    application = create_sandbox_app(crm, settings.home)
    err.print(
        f"{crm} sandbox on http://{host}:{port}  (records in {settings.home}/sandboxes)",
        highlight=False,
    )
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning")
    finally:
        application.close()


@sandbox_app.command("accounts")
def sandbox_accounts() -> None:
    """Print each sandbox's dev credentials and base URL as JSON."""
    from uwf.sandboxes import sandbox_accounts as accounts

    settings = Settings()
    _print_json(accounts(settings.home, settings.base_url))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the Pipe DB schema to the latest version."""
    from uwf.store import Store

    async def go() -> str:
        store = await Store.open(Settings().resolved_database_url)
        await store.close()
        return store.dialect

    dialect = _run(go)
    err.print(f"{dialect} schema is up to date")


def _register_governance() -> None:
    from uwf._cli_governance import register

    register(metadata_app, connections_app)


_register_governance()


if __name__ == "__main__":  # pragma: no cover
    main()
