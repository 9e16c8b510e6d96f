"""Small formats every CRM sandbox's routes need: timestamps, public URLs, page cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

__all__ = ["Json", "decode_cursor", "encode_cursor", "public_base_url", "utc_iso"]

Json = dict[str, Any]


def utc_iso(ts: float | None = None) -> str:
    """Format a UNIX time (default: now) the way CRMs do: ISO-8601, seconds, ``Z``."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def public_base_url(request: Request) -> str:
    """Scheme, host and mount prefix of the sandbox, as the client reached it.

    ``request.base_url`` is the *top-level* app's root, so under a `Mount` it misses the
    prefix; the mount's own ``root_path`` is what real record URLs must carry.
    """
    root = str(request.scope.get("root_path", ""))
    return f"{request.url.scheme}://{request.url.netloc}{root}".rstrip("/")


def encode_cursor(data: Mapping[str, Any]) -> str:
    """Opaque, URL-safe pagination cursor (clients must not parse it, as with real CRMs)."""
    raw = json.dumps(dict(data), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Json | None:
    """Inverse of `encode_cursor`; None when the cursor was not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None
