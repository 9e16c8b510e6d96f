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
from uwf.auth._vault import Vault, VaultError

__all__ = [
    "MASK",
    "REDACTED",
    "Authenticator",
    "Credentials",
    "Grant",
    "OAuthAuth",
    "SecretResolver",
    "StaticAuth",
    "Token",
    "TokenManager",
    "Vault",
    "VaultError",
    "build_authenticator",
    "build_credentials",
    "env_or_sandbox_resolver",
    "has_sensitive",
    "mask_sensitive",
    "redact",
    "seal_sensitive",
    "sensitive_values",
    "unseal_sensitive",
]
