"""Logging (structlog, JSON lines on stderr) with correlation ids bound per execution.

Every log line passes `redact_processor`: secrets never reach the log, by key or by value.
"""

from uwf.observability._logging import configure_logging
from uwf.observability._redaction import (
    REDACTED,
    SECRET_KEYS,
    known_secrets,
    redact_processor,
    remember_secrets,
    scrub,
)

__all__ = [
    "REDACTED",
    "SECRET_KEYS",
    "configure_logging",
    "known_secrets",
    "redact_processor",
    "remember_secrets",
    "scrub",
]
