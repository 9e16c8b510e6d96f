"""Logging (structlog, JSON lines on stderr) with correlation ids bound per execution."""

from uwf.observability._logging import configure_logging

__all__ = ["configure_logging"]
