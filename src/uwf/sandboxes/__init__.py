"""CRM sandboxes: faithful local emulators of the CRM APIs that UWF drives.

Each sandbox is an ASGI app that UWF mounts at ``/sandbox/{crm}``. Its records live in
``home/sandboxes/{crm}.sqlite3`` and survive restarts; its dev credentials are generated on
first start and stored with the records. ``POST {prefix}/_control`` injects latency, errors
and dropped connections (see docs/sandboxes.md).

Example:
    >>> from starlette.routing import Mount
    >>> app = create_sandbox_app("zendesk", home)                      # doctest: +SKIP
    >>> routes = [Mount("/sandbox/zendesk", app=app)]                  # doctest: +SKIP
    >>> sandbox_credentials(home, "zendesk")["api_token"]              # doctest: +SKIP

Inside, one module per concern; a CRM module (``zendesk``, with its records in
``_zendesk_records``) brings routes, error bodies, schema and seed data, and reuses:

- ``_harness``: `SandboxApp` (``_control``, faults, stats, account limit) and the
  `SandboxProfile` a CRM implements;
- ``_store``: the SQLite record store, id sequences and the idempotency ledger;
- ``_limits``: fixed- and sliding-window rate limiters;
- ``_common``: timestamps, public URLs and pagination cursors.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uwf.sandboxes._harness import SandboxApp

__all__ = [
    "SANDBOXES",
    "SandboxApp",
    "SandboxFactory",
    "UnknownSandboxError",
    "create_sandbox_app",
    "sandbox_accounts",
    "sandbox_credentials",
]


class UnknownSandboxError(LookupError):
    """Raised for a CRM id that has no sandbox; the message lists the known ids."""


@dataclass(frozen=True, slots=True)
class SandboxFactory:
    """How to build one CRM's sandbox and read its credentials.

    Attributes:
        crm: Registry id, also the last segment of the mount path.
        create_app: Builds the ASGI app over a UWF home directory.
        credentials: Reads (creating on first use) the dev credentials for a home.
    """

    crm: str
    create_app: Callable[[Path], SandboxApp]
    credentials: Callable[[Path], dict[str, str]]


# Each CRM's sandbox is the module `uwf.sandboxes.<crm>`, exposing `create_app(home)` and
# `credentials(home)`. The list is explicit; a module not (yet) present is simply not offered.
_CRMS = ("zendesk", "salesforce", "servicenow", "hubspot", "dynamics", "freshdesk")


def _discover() -> dict[str, SandboxFactory]:
    factories: dict[str, SandboxFactory] = {}
    for crm in _CRMS:
        name = f"uwf.sandboxes.{crm}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        factories[crm] = SandboxFactory(crm, module.create_app, module.credentials)
    return factories


SANDBOXES: Mapping[str, SandboxFactory] = _discover()


def _factory(crm: str) -> SandboxFactory:
    try:
        return SANDBOXES[crm]
    except KeyError:
        known = ", ".join(sorted(SANDBOXES))
        raise UnknownSandboxError(f"no sandbox for CRM {crm!r}; known: {known}") from None


def create_sandbox_app(crm: str, home: Path) -> SandboxApp:
    """Build the sandbox app of ``crm`` over ``home`` (seeding its database on first use).

    Opening the SQLite file is a short blocking call: do it at startup, not per request.

    Args:
        crm: A key of `SANDBOXES`, e.g. ``"zendesk"``.
        home: UWF's home directory; records go to ``home/sandboxes/{crm}.sqlite3``.

    Returns:
        An ASGI app that works at the root or under a `Mount` prefix. Call its ``close()``
        when the server stops.

    Raises:
        UnknownSandboxError: ``crm`` has no sandbox; the message lists the known ones.
    """
    return _factory(crm).create_app(home)


def sandbox_credentials(home: Path, crm: str) -> dict[str, str]:
    """The dev credentials of ``crm``'s sandbox (without its base URL).

    The engine uses it to resolve a connection secret written as
    ``{sandbox: zendesk, field: api_token}``.

    Args:
        home: UWF's home directory.
        crm: A key of `SANDBOXES`.

    Returns:
        For Zendesk: ``subdomain``, ``email``, ``api_token`` and ``auth``. Stable across
        restarts, created on first use. Cached per process after the first read, because
        the engine resolves secrets on the request path and must not touch SQLite each time.

    Raises:
        UnknownSandboxError: ``crm`` has no sandbox.
    """
    return dict(_cached_credentials(crm, home.resolve()))


@functools.cache
def _cached_credentials(crm: str, home: Path) -> tuple[tuple[str, str], ...]:
    # Credentials never change once the database exists, so a cache cannot go stale
    # short of deleting the file under a running process.
    return tuple(_factory(crm).credentials(home).items())


def sandbox_accounts(home: Path, base_url: str) -> dict[str, dict[str, Any]]:
    """Every sandbox's base URL and credentials, as UWF shows them to a developer.

    Args:
        home: UWF's home directory.
        base_url: Where UWF is served, e.g. ``http://127.0.0.1:8080``.

    Returns:
        ``{crm: {"base_url": f"{base_url}/sandbox/{crm}", **credentials}}``.
    """
    root = base_url.rstrip("/")
    return {
        crm: {"base_url": f"{root}/sandbox/{crm}", **sandbox_credentials(home, crm)}
        for crm in SANDBOXES
    }
