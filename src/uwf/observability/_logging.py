from __future__ import annotations

import logging
import sys

import structlog

from uwf.observability._redaction import known_secrets, redact_processor, scrub


class _RedactingFilter(logging.Filter):
    """Libraries' own log records (uvicorn, aiohttp, alembic) are scrubbed like ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        if known_secrets() or record.args:
            record.msg, record.args = scrub(record.getMessage()), None
        return True


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Send structlog and stdlib logs to stderr, one JSON object a line (or console text)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter())
    # Alembic narrates every migration check at INFO; only its warnings matter here.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            # Last before rendering: it sees the formatted traceback too.
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
