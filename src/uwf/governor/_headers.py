"""Read the budget a CRM reports in its response headers.

Connectors name their headers in `rate_limit` (`RateLimitHeadersSpec`). Besides plain numbers
this understands Salesforce's `Sforce-Limit-Info: api-usage=18/5000` (used/max, in whichever
named header carries it) and falls back to the IETF draft's `ratelimit-limit`,
`ratelimit-remaining` and `ratelimit-reset` (seconds) when the named headers are absent —
Zendesk sends those on some endpoints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from uwf.connectors import RateLimitHeadersSpec

__all__ = ["Reported", "reported_budget"]

_USAGE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
# A reset "in seconds" this large is a Unix time a CRM sent without saying so.
_UNIX_THRESHOLD = 1e9


@dataclass(frozen=True, slots=True)
class Reported:
    """What the CRM said: requests left, its budget's size, seconds until it resets."""

    remaining: float
    limit: float | None
    reset_in: float | None


def reported_budget(
    spec: RateLimitHeadersSpec, headers: Mapping[str, str], now: float
) -> Reported | None:
    """The reported budget, or None when the answer carries no remaining count."""
    lowered = {k.lower(): v for k, v in headers.items()}

    def header(name: str | None) -> str | None:
        return lowered.get(name.lower()) if name else None

    remaining = limit = None
    for name in (spec.remaining, spec.limit):
        usage = _USAGE.search(header(name) or "")
        if usage:
            used, limit = float(usage.group(1)), float(usage.group(2))
            remaining = limit - used
            break
    if remaining is None:
        remaining = _number(header(spec.remaining))
        if remaining is None:
            remaining = _number(lowered.get("ratelimit-remaining"))
        limit = _number(header(spec.limit))
        if limit is None:
            limit = _number(lowered.get("ratelimit-limit"))
    if remaining is None:
        return None
    reset = _number(header(spec.reset))
    if reset is not None and (spec.reset_format == "unix" or reset > _UNIX_THRESHOLD):
        reset -= now
    if reset is None:
        reset = _number(lowered.get("ratelimit-reset"))
    return Reported(max(remaining, 0.0), limit, reset if reset is not None and reset > 0 else None)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.split(";")[0].split(",")[0].strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
