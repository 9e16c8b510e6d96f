"""Credentials: secret references, auth headers, OAuth tokens, encryption at rest, redaction."""

from uwf.auth._credentials import (
    REDACTED,
    Authenticator,
    Credentials,
    OAuthAuth,
    SecretResolver,
    StaticAuth,
    build_authenticator,
    build_credentials,
    env_or_sandbox_resolver,
    redact,
)
from uwf.auth._oauth import Grant, Token, TokenManager
from uwf.auth._sensitive import (
    MASK,
    has_sensitive,
    mask_sensitive,
    seal_sensitive,
    sensitive_values,
    unseal_sensitive,
)
from uwf.auth._stored import (
    RotationReport,
    SecretSources,
    open_secret,
    rotate_keys,
    seal_secret,
)
from uwf.auth._vault import Vault, VaultError
from uwf.auth._vault_kv import VaultKvClient

__all__ = [
    "MASK",
    "REDACTED",
    "Authenticator",
    "Credentials",
    "Grant",
    "OAuthAuth",
    "RotationReport",
    "SecretResolver",
    "SecretSources",
    "StaticAuth",
    "Token",
    "TokenManager",
    "Vault",
    "VaultError",
    "VaultKvClient",
    "build_authenticator",
    "build_credentials",
    "env_or_sandbox_resolver",
    "has_sensitive",
    "mask_sensitive",
    "open_secret",
    "redact",
    "rotate_keys",
    "seal_secret",
    "seal_sensitive",
    "sensitive_values",
    "unseal_sensitive",
]
