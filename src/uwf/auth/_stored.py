"""Secrets UWF keeps itself (`uwf secrets set`), dynamic secret references, key rotation.

A stored secret is encrypted with the key ring's current key (`Vault`), bound to its tenant and
name, so a ciphertext copied to another row does not decrypt. References that need I/O
(`{stored: …}` from the Pipe DB, `{vault: …, field: …}` from HashiCorp Vault) are looked up
before a connection's credentials are built; everything else goes to the static resolver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uwf.auth._credentials import SecretResolver
from uwf.auth._sensitive import SEALED_PREFIX, is_sealed, reseal
from uwf.auth._vault import Vault, VaultError
from uwf.auth._vault_kv import VaultKvClient
from uwf.errors import FatalError
from uwf.metadata import SecretRef
from uwf.observability import remember_secrets
from uwf.store import SecretRepo, TokenRepo

__all__ = [
    "RotationReport",
    "SecretSources",
    "open_secret",
    "rotate_keys",
    "seal_secret",
]


def _context(tenant: str, name: str) -> str:
    return f"secret:{tenant}:{name}"


def seal_secret(vault: Vault, tenant: str, name: str, value: str) -> str:
    """The ciphertext to store for `tenant`'s secret `name`."""
    return vault.encrypt(value.encode(), _context(tenant, name))


def open_secret(vault: Vault, tenant: str, name: str, ciphertext: str) -> str:
    return vault.decrypt(ciphertext, _context(tenant, name)).decode()


class SecretSources:
    """Resolves a connection's secret references, stored and Vault ones included."""

    def __init__(
        self,
        static: SecretResolver,
        *,
        secrets: SecretRepo | None = None,
        vault: Vault | None = None,
        kv: VaultKvClient | None = None,
    ) -> None:
        self._static = static
        self._secrets = secrets
        self._vault = vault
        self._kv = kv

    async def close(self) -> None:
        if self._kv is not None:
            await self._kv.close()

    async def prefetch(self, tenant: str, refs: Iterable[SecretRef]) -> SecretResolver:
        """A resolver for `refs` of `tenant`: dynamic values fetched now, the rest on demand."""
        found: dict[SecretRef, str] = {}
        for ref in refs:
            if ref.dynamic and ref not in found:
                found[ref] = await self._fetch(tenant, ref)
        remember_secrets(found.values())

        def resolve(ref: SecretRef) -> str:
            if ref in found:
                return found[ref]
            return self._static(ref)

        return resolve

    async def _fetch(self, tenant: str, ref: SecretRef) -> str:
        if ref.vault is not None:
            if self._kv is None:
                raise FatalError(
                    f"{ref.describe()}: HashiCorp Vault is not configured "
                    "(set UWF_VAULT_ADDR and UWF_VAULT_TOKEN)"
                )
            assert ref.field is not None
            return await self._kv.read(ref.vault, ref.field)
        assert ref.stored is not None
        if self._secrets is None or self._vault is None:
            raise FatalError(f"{ref.describe()}: this process has no Pipe DB secrets")
        row = await self._secrets.get(tenant, ref.stored)
        if row is None:
            raise FatalError(
                f"tenant '{tenant}' has no stored secret '{ref.stored}' "
                f"(set it with `uwf secrets set {tenant} {ref.stored}`)"
            )
        try:
            return open_secret(self._vault, tenant, ref.stored, row.ciphertext)
        except VaultError as exc:
            raise FatalError(f"stored secret '{ref.stored}' of tenant '{tenant}': {exc}") from None


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What `rotate_keys` did; `failed` lists what no known key decrypts."""

    key_id: str
    secrets: int
    tokens: int
    inputs: int
    unchanged: int
    failed: tuple[str, ...]


async def rotate_keys(secrets: SecretRepo, tokens: TokenRepo, vault: Vault) -> RotationReport:
    """Re-encrypt stored secrets, OAuth tokens and sealed inputs under the current key.

    What the current key already encrypted is left alone, so running it twice is harmless.
    Afterwards the retired keys are no longer needed (unless `failed` is not empty).
    """
    counts = {"secrets": 0, "tokens": 0, "inputs": 0, "unchanged": 0}
    failed: list[str] = []
    for row in await secrets.list():
        if vault.is_current(row.ciphertext):
            counts["unchanged"] += 1
            continue
        try:
            value = open_secret(vault, row.tenant, row.name, row.ciphertext)
        except VaultError as exc:
            failed.append(f"stored secret {row.tenant}/{row.name}: {exc}")
            continue
        sealed = seal_secret(vault, row.tenant, row.name, value)
        if await secrets.replace(row.tenant, row.name, row.ciphertext, sealed, vault.key_id):
            counts["secrets"] += 1
    for token in await tokens.all():
        if token.ciphertext is None or vault.is_current(token.ciphertext):
            counts["unchanged"] += token.ciphertext is not None
            continue
        try:
            plain = vault.decrypt(token.ciphertext, token.key)
        except VaultError as exc:
            failed.append(f"OAuth token {token.key.split(':', 1)[0]}: {exc}")
            continue
        sealed = vault.encrypt(plain, token.key)
        if await secrets.replace_token(token.key, token.ciphertext, sealed):
            counts["tokens"] += 1
    for execution_id, tenant, data in await secrets.sealed_inputs():
        try:
            resealed, changed = _reseal_all(data, vault, tenant)
        except VaultError as exc:
            failed.append(f"sensitive input of execution {execution_id}: {exc}")
            continue
        if changed:
            await secrets.replace_input(execution_id, resealed)
            counts["inputs"] += 1
    return RotationReport(
        vault.key_id,
        counts["secrets"],
        counts["tokens"],
        counts["inputs"],
        counts["unchanged"],
        tuple(failed),
    )


def _reseal_all(value: Any, vault: Vault, tenant: str) -> tuple[Any, bool]:
    """`value` with every sealed input value under the current key; whether any changed."""
    if isinstance(value, dict):
        pairs = [(k, *_reseal_all(v, vault, tenant)) for k, v in value.items()]
        return {k: v for k, v, _ in pairs}, any(c for _, _, c in pairs)
    if isinstance(value, list):
        items = [_reseal_all(v, vault, tenant) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if is_sealed(value) and not vault.is_current(str(value)[len(SEALED_PREFIX) :]):
        return reseal(str(value), vault, tenant), True
    return value, False
