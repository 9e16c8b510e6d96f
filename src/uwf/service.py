"""Assemble a running UWF: the Pipe DB, the metadata, the executor and the sandboxes' address."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from uwf.auth import Vault, VaultKvClient, env_or_sandbox_resolver
from uwf.engine import Executor
from uwf.governor import Governor, open_state
from uwf.metadata import load_directory
from uwf.sandboxes import SANDBOXES, sandbox_credentials
from uwf.settings import Settings
from uwf.store import AuditEntry, Store

__all__ = ["Service", "default_metadata_dir", "load_vault", "make_executor"]

log = structlog.get_logger("uwf")


def default_metadata_dir(settings: Settings) -> Path | None:
    if settings.metadata_dir is not None:
        return settings.metadata_dir
    candidate = Path("examples/metadata")
    return candidate if candidate.is_dir() else None


@dataclass
class Service:
    """Everything a process of UWF runs with; `start` it, then `stop` it."""

    settings: Settings
    store: Store
    executor: Executor | None
    vault: Vault
    sandbox_base: str | None = None

    @classmethod
    async def start(
        cls, settings: Settings, *, worker: bool = True, sandbox_base: str | None = None
    ) -> Service:
        """Open the Pipe DB (migrating it), apply the first metadata, start the worker.

        `sandbox_base` is where the built-in sandboxes are reached (`…/sandbox`); None when
        this process does not serve them.
        """
        settings.home.mkdir(parents=True, exist_ok=True)
        vault = load_vault(settings)
        store = await Store.open(settings.resolved_database_url)
        if await store.active_metadata() is None:
            directory = default_metadata_dir(settings)
            if directory is not None:
                bundle = load_directory(directory)
                version, _ = await store.apply_metadata(
                    bundle,
                    f"first start: {directory}",
                    audit=AuditEntry(
                        actor="system:first-start",
                        actor_type="system",
                        action="metadata.applied",
                        details={"digest": bundle.digest, "tenants": sorted(bundle.tenants)},
                    ),
                )
                log.info("metadata applied", version=version, source=str(directory))
        executor = None
        if worker:
            executor = make_executor(settings, store, sandbox_base)
            await executor.start()
        return cls(settings, store, executor, vault, sandbox_base)

    @staticmethod
    def settle_heap() -> None:
        """Call once a long-running process has started (`uwf serve`, `uwf worker`).

        What exists by then lives as long as the process — code, settings, the metadata, the
        sandboxes' seed data. `gc.freeze` keeps it out of the cyclic collector's full passes,
        which otherwise walk all of it: measured, 200 ms pauses of the event loop every few
        seconds under a stream of actions (the API's `202` p99 went from 180 to 36 ms at
        300/s with the collector off). Not for tests, which start many services in one process:
        whatever they frame would never be collected.
        """
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if self.executor is not None:
            await self.executor.stop(self.settings.drain_seconds)
        await self.store.close()


def load_vault(settings: Settings) -> Vault:
    """The key ring: `UWF_SECRET_KEY` (or the generated key file) and any retired keys."""
    return Vault.load(
        settings.home,
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        settings.secret_keys_old.get_secret_value() if settings.secret_keys_old else None,
    )


def vault_kv_client(settings: Settings) -> VaultKvClient | None:
    """A HashiCorp Vault client when `UWF_VAULT_ADDR` is set (its token: `UWF_VAULT_TOKEN`)."""
    if not settings.vault_addr:
        return None
    token = settings.vault_token.get_secret_value() if settings.vault_token else ""
    return VaultKvClient(settings.vault_addr, token)


def make_executor(settings: Settings, store: Store, sandbox_base: str | None) -> Executor:
    home = settings.home

    def sandbox_url(crm: str) -> str | None:
        if sandbox_base is None or crm not in SANDBOXES:
            return None
        return f"{sandbox_base.rstrip('/')}/{crm}"

    policy = settings.network_policy()
    if sandbox_base is not None:
        # The embedded default calls its own sandboxes, over http on this host: allow exactly
        # that address, nothing else on the machine.
        parts = urlsplit(sandbox_base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or "localhost"
        policy = policy.with_hosts(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return Executor(
        store,
        policy=policy,
        secrets=env_or_sandbox_resolver(lambda crm: sandbox_credentials(home, crm)),
        sandbox_url=sandbox_url,
        vault=load_vault(settings),
        kv=vault_kv_client(settings),
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        governor=Governor(
            open_state(settings.governor_url, store.engine),
            lease_seconds=settings.governor_lease_seconds,
        ),
    )
