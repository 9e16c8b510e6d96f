"""Encryption at rest for what UWF must store of a secret (OAuth tokens, later credentials).

AES-256-GCM (the `cryptography` package) under a key from `UWF_SECRET_KEY` (32 bytes,
URL-safe base64) or `$UWF_HOME/secret.key`, generated on first start and readable by its owner
only. Every ciphertext names the key that made it (`v1:<key id>:<nonce+ciphertext>`), so keys
can be rotated without losing what older keys encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from uwf.errors import UwfError

__all__ = ["Vault", "VaultError"]


class VaultError(UwfError):
    """A ciphertext could not be decrypted: wrong key, tampered, or the key is missing."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def _decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        raise VaultError("UWF_SECRET_KEY is not URL-safe base64") from None
    if len(key) != 32:
        raise VaultError(f"UWF_SECRET_KEY must decode to 32 bytes, not {len(key)}")
    return key


@dataclass
class Vault:
    """Encrypts with the current key; decrypts with any key it knows."""

    current: bytes
    older: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._keys = {_key_id(k): AESGCM(k) for k in [self.current, *self.older]}
        self.key_id = _key_id(self.current)

    @classmethod
    def load(cls, home: Path, secret_key: str | None = None, old_keys: str | None = None) -> Vault:
        """The key from `UWF_SECRET_KEY` if given, else `home/secret.key` (created if absent).

        Retired keys, which still decrypt until `uwf secrets rotate` has re-encrypted what
        they made, come from `old_keys` (`UWF_SECRET_KEYS_OLD`, comma-separated) and from
        `home/secret.keys.old` (one a line), if present.
        """
        older = [_decode_key(k) for k in (old_keys or "").split(",") if k.strip()]
        old_file = home / "secret.keys.old"
        if old_file.exists():
            older += [_decode_key(k) for k in old_file.read_text().splitlines() if k.strip()]
        if secret_key:
            return cls(_decode_key(secret_key), older)
        path = home / "secret.key"
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
        return cls(_decode_key(path.read_text()), older)

    def key_of(self, token: str) -> str:
        """The id of the key that made a ciphertext."""
        return token.split(":", 2)[1] if token.count(":") >= 2 else "?"

    def is_current(self, token: str) -> bool:
        return self.key_of(token) == self.key_id

    def encrypt(self, plaintext: bytes, context: str) -> str:
        """`context` (e.g. the connection key) is bound in: a ciphertext moved elsewhere fails."""
        nonce = secrets.token_bytes(12)
        sealed = self._keys[self.key_id].encrypt(nonce, plaintext, context.encode())
        return f"v1:{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> bytes:
        try:
            version, key_id, payload = token.split(":", 2)
        except ValueError:
            raise VaultError("not a UWF ciphertext") from None
        aead = self._keys.get(key_id)
        if version != "v1" or aead is None:
            raise VaultError(f"ciphertext made with unknown key {key_id}")
        raw = base64.urlsafe_b64decode(payload)
        try:
            return aead.decrypt(raw[:12], raw[12:], context.encode())
        except InvalidTag:
            raise VaultError("ciphertext does not decrypt (tampered or wrong context)") from None
