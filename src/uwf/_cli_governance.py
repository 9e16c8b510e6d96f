"""CLI commands of mapping governance: `connections describe`, `metadata check --against-crm`
and the plan printed by `uwf run --dry-run`. Registered on the apps of `uwf.cli`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from uwf.settings import Settings

__all__ = ["print_dry_run", "register"]

# Messages carry paths and ids to copy: never hard-wrapped at the terminal width.
err = Console(stderr=True, soft_wrap=True)


def register(metadata_app: typer.Typer, connections_app: typer.Typer) -> None:
    """Add the governance commands to `uwf metadata` and `uwf connections`."""
    connections_app.command("describe")(connections_describe)
    metadata_app.command("check")(metadata_check)


def connections_describe(
    name: Annotated[str, typer.Argument(help="Connection name")],
    obj: Annotated[str, typer.Option("--object", help="Canonical object, e.g. case")] = "case",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Read an object's live field metadata from the CRM (names, types, picklist values).

    Only reads are sent. Fields the connector spec maps show their canonical name too.
    """
    from uwf._governance import describe_connection
    from uwf.cli import _print_json, _run

    description = _run(lambda: describe_connection(Settings(), name, obj))
    if as_json:
        _print_json(description.to_json())
        return
    table = Table(
        title=f"{description.connection} ({description.connector}): {description.object}"
        + (f" = {description.native_name}" if description.native_name else ""),
        title_justify="left",
    )
    for column in ("field", "canonical", "type", "required", "read-only", "picklist values"):
        table.add_column(column, overflow="fold")
    for field in description.fields:
        options = ", ".join(
            str(o.value) if o.label in (None, str(o.value)) else f"{o.value}={o.label}"
            for o in field.options
        )
        table.add_row(
            field.name,
            field.canonical or "",
            field.type or "",
            _yes(field.required),
            _yes(field.read_only),
            options,
        )
    Console(width=160).print(table)


def _yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def metadata_check(
    directory: Annotated[
        Path | None,
        typer.Argument(help="A metadata directory; default: the active stored metadata"),
    ] = None,
    against_crm: Annotated[
        bool,
        typer.Option("--against-crm", help="Check mapped fields and values against the CRM"),
    ] = False,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's workflows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON")] = False,
) -> None:
    """Validate metadata and, with --against-crm, check it against the CRMs' live fields.

    Reports every mapped field the CRM object does not have, every value-map target (or
    literal) that is not an allowed picklist value of its field, and read-only fields written.
    Exit 1 when anything is found. Nothing is written to any CRM.
    """
    from uwf._governance import check_metadata
    from uwf.cli import _print_json, _run, _valid_bundle

    bundle = _valid_bundle(directory) if directory is not None else None
    if not against_crm:
        if bundle is None:
            err.print("[red]error:[/red] give a DIR to validate, or --against-crm", highlight=False)
            raise typer.Exit(2)
        err.print("OK: valid (add --against-crm to check it against the CRMs)")
        return
    findings = _run(lambda: check_metadata(Settings(), directory, bundle, tenant))
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        _print_json([f.as_dict() for f in findings])
    else:
        for finding in findings:
            prefix = "" if finding.severity == "error" else "note: "
            sys.stdout.write(f"{prefix}{finding}\n")
    if errors:
        err.print(f"[red]{len(errors)} problem(s)[/red] against the CRM", highlight=False)
        raise typer.Exit(1)
    err.print("OK: every mapped field and value exists in the CRM", highlight=False)


def print_dry_run(plan: dict[str, Any], as_json: bool) -> None:
    """`uwf run --dry-run`: the plan as JSON, or as lines a person reads."""
    if as_json:
        sys.stdout.write(json.dumps(plan, indent=2, default=str, ensure_ascii=False) + "\n")
        return
    out = sys.stdout
    out.write(
        f"DRY RUN of {plan['tenant']}/{plan['workflow']} (metadata version "
        f"{plan['metadata_version']}): {plan['status']}; nothing was written\n"
    )
    for step in plan["steps"]:
        out.write(f"  {step['id']} ({step.get('type') or '?'}): {step['status']}\n")
        for entry in step.get("diff") or []:
            mark = "" if entry["changed"] else "  (unchanged)"
            out.write(
                f"      {entry['field']}: {_short(entry['current'])} → {_short(entry['new'])}"
                f"{mark}\n"
            )
        if step.get("error"):
            out.write(f"      error: {step['error'].get('message')}\n")
    out.write("requests:\n")
    for request in plan["requests"]:
        verdict = f"sent, {request.get('status')}" if request["sent"] else "NOT SENT"
        out.write(f"  {request.get('method')} {request.get('url')}  [{verdict}]\n")
        if not request["sent"] and request.get("body") is not None:
            out.write(f"      body: {json.dumps(request['body'], ensure_ascii=False)}\n")
    if plan.get("error"):
        out.write(f"error: {plan['error'].get('message')}\n")


def _short(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
