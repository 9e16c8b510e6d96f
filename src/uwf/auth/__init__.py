"""Credentials: resolving secret references, building auth headers, redacting secrets."""

from uwf.auth._credentials import (
    REDACTED,
    Credentials,
    SecretResolver,
    build_credentials,
    env_or_sandbox_resolver,
    redact,
)

__all__ = [
    "REDACTED",
    "Credentials",
    "SecretResolver",
    "build_credentials",
    "env_or_sandbox_resolver",
    "redact",
]
