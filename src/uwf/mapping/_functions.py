"""Project functions for expressions: phone numbers, countries and dates.

These are plain, pure functions; `_expressions._Functions` registers them as JMESPath functions
so that templates can say `{{ e164(input.phone, 'GB') }}`. Each one:

* gives `null` back for `null` (and for blank text), so optional inputs stay optional;
* raises `ExpressionError` naming the function and the offending value for anything else it
  cannot convert, and never another exception, whatever JSON it is given;
* bounds the text it looks at (`MAX_TEXT_LENGTH`, `MAX_FORMAT_LENGTH`), so no input can make
  it slow.

`now()` is the only impure one. Within one expression it returns one instant; wrap a larger
evaluation (a whole step) in `frozen_now()` to make every `now()` in it agree.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import phonenumbers
import pycountry

from uwf.errors import ExpressionError

MAX_TEXT_LENGTH = 256
"""Longest phone number, country or date text the functions will look at."""
MAX_FORMAT_LENGTH = 100
"""Longest `strftime` pattern `format_date` accepts (it bounds the output's length)."""
EPOCH_MS_THRESHOLD = 100_000_000_000
"""Epoch numbers at least this large (in absolute value) are milliseconds, smaller ones seconds.

1e11 seconds is the year 5138 while 1e11 milliseconds is March 1973, so real timestamps from
either unit fall on the right side.
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def describe(value: Any, limit: int = 60) -> str:
    """A short, readable rendering of a value for error messages: `'P9'`, `42.5`, `{"a":1}`."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int) and value.bit_length() > 128:
        text = "a very large number"  # str() refuses ints of more than 4300 digits
    elif isinstance(value, int | float | Decimal):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages such as "got an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(func: str, value: Any, what: str) -> str | None:
    """Text for `value` (numbers written out), `None` for null or blank; else an error."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise ExpressionError(f"{func}(): {describe(value)} is not {what}")
            value = int(value)
        return str(value)
    if not isinstance(value, str):
        raise ExpressionError(f"{func}(): expected {what} as text, got {json_type(value)}")
    if len(value) > MAX_TEXT_LENGTH:
        raise ExpressionError(
            f"{func}(): {describe(value)} is {len(value)} characters long;"
            f" the limit is {MAX_TEXT_LENGTH}"
        )
    return value.strip() or None


# -- phone numbers --------------------------------------------------------------------------


def e164(phone: Any, default_region: Any = None) -> str | None:
    """A phone number in E.164 form, `+14155550132`.

    Spaces, dashes, dots, parentheses, a `tel:` prefix and a trunk `(0)` are ignored; a leading
    `00` counts as `+`; an extension (`ext. 7`, `x7`) is dropped. Without `default_region` the
    number must be international (`+…`/`00…`); with it (an ISO 3166-1 alpha-2 code such as
    `'GB'`) a national number is read as that region's. The number must be valid for its
    country, not just plausible in length.

    Example:
        `e164('(415) 555-0132 ext. 7', 'US')` → `'+14155550132'`.
    """
    text = _text("e164", phone, "a phone number")
    if text is None:
        return None
    region = _phone_region(default_region)
    if text.startswith("00"):
        # Many countries dial abroad with 00; phonenumbers only knows the region's own prefix.
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if (
            region is None
            and exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        ):
            raise ExpressionError(
                f"e164(): {describe(phone)} has no country code; write it as +<country code>…"
                " or pass the region it belongs to, e.g. e164(phone, 'GB')"
            ) from None
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        where = f" in region {region}" if region else ""
        raise ExpressionError(f"e164(): {describe(phone)} is not a valid phone number{where}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_region(region: Any) -> str | None:
    if region is None or (isinstance(region, str) and not region.strip()):
        return None
    code = region.strip().upper() if isinstance(region, str) else None
    if code is None or code not in phonenumbers.SUPPORTED_REGIONS:
        raise ExpressionError(
            f"e164(): unknown region {describe(region)};"
            " pass an ISO 3166-1 alpha-2 code such as 'US' or 'GB'"
        )
    return code


# -- countries ------------------------------------------------------------------------------

# Names people and CRMs write that are not ISO names, codes or pycountry's common names.
# Keys are written as `_country_key` leaves them.
_COUNTRY_ALIASES: dict[str, str] = {
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "us": "US", "u s": "US", "u s a": "US", "america": "US", "united states of america": "US",
    "uae": "AE", "emirates": "AE", "russia": "RU", "korea": "KR", "czech republic": "CZ",
    "turkey": "TR", "holland": "NL", "ivory coast": "CI", "cape verde": "CV", "burma": "MM",
    "east timor": "TL", "swaziland": "SZ", "macedonia": "MK", "vatican": "VA",
    "vatican city": "VA", "palestine": "PS", "brunei": "BN", "micronesia": "FM",
    "deutschland": "DE", "osterreich": "AT", "schweiz": "CH", "suisse": "CH",
    "svizzera": "CH", "espana": "ES", "brasil": "BR", "italia": "IT", "nederland": "NL",
    "belgique": "BE", "belgie": "BE", "sverige": "SE", "norge": "NO", "danmark": "DK",
    "polska": "PL", "suomi": "FI", "eire": "IE", "mexique": "MX", "nippon": "JP",
}  # fmt: skip


_COUNTRY_WORDS = {"st": "saint", "ste": "sainte", "is": "islands", "isl": "islands"}


def _country_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of a country name."""
    text = unicodedata.normalize("NFKD", text.replace("&", " and "))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().replace(".", "")
    words = [_COUNTRY_WORDS.get(w, w) for w in re.sub(r"[\W_]+", " ", text).split()]
    return " ".join(words).removeprefix("the ")


@functools.cache
def _country_index() -> dict[str, str]:
    """Every code and name pycountry knows, keyed by `_country_key`, built once."""
    exact: dict[str, str] = {}
    derived: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        for attr in ("alpha_2", "alpha_3", "numeric", "name", "official_name", "common_name"):
            name = getattr(country, attr, None)
            if not name:
                continue
            exact.setdefault(_country_key(name), code)
            # "Korea, Republic of" → "Republic of Korea"; "Holy See (Vatican City State)" →
            # "Holy See": the forms people actually type.
            bare = re.sub(r"\s*\(.*?\)", "", name)
            head, comma, tail = bare.partition(", ")
            for variant in (bare, f"{tail} {head}" if comma else bare):
                derived.setdefault(_country_key(variant), code)
    for key, code in [*derived.items(), *_COUNTRY_ALIASES.items()]:
        exact.setdefault(key, code)
    return exact


def iso_country(name_or_code: Any) -> str | None:
    """The ISO 3166-1 alpha-2 code of a country given by code or name.

    Accepts alpha-2 (`de`), alpha-3 (`DEU`) and numeric codes (`276`, `'040'`, `40`), the
    ISO short and official names and pycountry's common names (`Bolivia`, `South Korea`),
    plus a small table of everyday names (`USA`, `UK`, `Deutschland`, `Ivory Coast`).
    Case, accents, punctuation, `&`/`and` and a leading `the` do not matter. Exact lookups
    only: misspellings are errors, not guesses.

    Example:
        `iso_country('Côte d’Ivoire')` → `'CI'`.
    """
    text = _text("iso_country", name_or_code, "a country")
    if text is None:
        return None
    key = _country_key(text)
    if key.isascii() and key.isdigit() and len(key) <= 3:
        key = key.zfill(3)
    code = _country_index().get(key) if key else None
    if code is None:
        raise ExpressionError(
            f"iso_country(): {describe(name_or_code)} is not a country name or"
            " ISO 3166-1 code I know"
        )
    return code


# -- dates ----------------------------------------------------------------------------------

_FROZEN_NOW: ContextVar[datetime | None] = ContextVar("uwf_frozen_now", default=None)


@contextmanager
def frozen_now(at: datetime | None = None) -> Iterator[datetime]:
    """Make every `now()` inside the block return one instant (default: the current time).

    The engine can wrap one step's evaluation in it so that all its templates agree; tests use
    it to pin the clock. `at` must be timezone-aware.
    """
    instant = datetime.now(UTC) if at is None else at
    if instant.tzinfo is None:
        raise ValueError("frozen_now() needs a timezone-aware datetime")
    token = _FROZEN_NOW.set(instant.astimezone(UTC))
    try:
        yield instant
    finally:
        _FROZEN_NOW.reset(token)


def now() -> str:
    """The current instant as ISO-8601 UTC with milliseconds: `2026-11-22T10:15:30.123Z`.

    Inside `frozen_now()` it is the frozen instant.
    """
    instant = _FROZEN_NOW.get() or datetime.now(UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _zone_names() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def resolve_zone(name: Any, func: str = "format_date") -> tzinfo | None:
    """The IANA time zone called `name` (case-insensitive); `None` for null or blank."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return None
    key = name.strip().casefold() if isinstance(name, str) else None
    # Only names from the tz database reach ZoneInfo, so no text can make it read a file.
    canonical = _zone_names().get(key) if key is not None else None
    if canonical is None:
        raise ExpressionError(
            f"{func}(): unknown time zone {describe(name)};"
            " use an IANA name such as 'UTC' or 'Europe/Berlin'"
        )
    return zoneinfo.ZoneInfo(canonical)


def parse_datetime(value: Any, zone: tzinfo | None = None) -> datetime:
    """A timezone-aware datetime from ISO-8601 text or an epoch number.

    Text is ISO-8601 as Python reads it: `2024-03-05`, `2024-03-05T10:15:00`, with `Z`, an
    offset or fractional seconds, `T` or a space between date and time. A value without an
    offset (and a bare date, at midnight) is wall-clock time in `zone`, or UTC without one.
    Numbers are Unix time: seconds, or milliseconds from `EPOCH_MS_THRESHOLD` up.
    Raises `ExpressionError` (message without a prefix: callers add theirs).
    """
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return _from_epoch(value)
    if not isinstance(value, str):
        raise ExpressionError(
            f"expected an ISO-8601 date-time or epoch number, got {json_type(value)}"
        )
    text = value.strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise ExpressionError(f"{describe(value)} is too long to be a date-time")
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ExpressionError(f"{describe(value)} is not an ISO-8601 date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone or UTC)


def _from_epoch(number: float | Decimal) -> datetime:
    try:
        amount = float(number)
        if not math.isfinite(amount):
            raise ValueError(amount)
        if abs(amount) >= EPOCH_MS_THRESHOLD:
            return _EPOCH + timedelta(milliseconds=amount)
        return _EPOCH + timedelta(seconds=amount)
    except (OverflowError, ValueError):
        raise ExpressionError(f"{describe(number)} is not a Unix time in years 1–9999") from None


def iso_format(instant: datetime) -> str:
    """ISO-8601 with only the precision needed (seconds, ms or µs); a zero offset is `Z`."""
    micro = instant.microsecond
    spec = "seconds" if not micro else "milliseconds" if micro % 1000 == 0 else "microseconds"
    text = instant.isoformat(timespec=spec)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def format_date(value: Any, fmt: Any = None, timezone: Any = None) -> str | None:
    """Parse a date or date-time (see `parse_datetime`) and write it out.

    `timezone` (an IANA name) is both the zone a value without an offset is read in and the
    zone the result is written in; without it an offset in the value is kept and a value
    without one is UTC. `fmt` is a `strftime` pattern (`'%d/%m/%Y'`, C locale); without it
    the result is ISO-8601 (`2024-03-05T09:15:00+01:00`, `…Z` for UTC).

    Example:
        `format_date('2024-03-05T08:15:00Z', '%Y-%m-%d %H:%M', 'Europe/Berlin')`
        → `'2024-03-05 09:15'`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if fmt is not None and not isinstance(fmt, str):
        raise ExpressionError(f"format_date(): the format must be text, got {json_type(fmt)}")
    if fmt is not None and len(fmt) > MAX_FORMAT_LENGTH:
        raise ExpressionError(
            f"format_date(): the format is {len(fmt)} characters long;"
            f" the limit is {MAX_FORMAT_LENGTH}"
        )
    zone = resolve_zone(timezone)
    try:
        instant = parse_datetime(value, zone)
    except ExpressionError as exc:
        raise ExpressionError(f"format_date(): {exc.message}") from None
    if zone is not None:
        try:
            instant = instant.astimezone(zone)
        except (OverflowError, ValueError):
            # Year 1 or 9999 shifted across a year boundary.
            raise ExpressionError(
                f"format_date(): {describe(value)} is out of range"
                f" in time zone {describe(timezone)}"
            ) from None
    if not fmt:
        return iso_format(instant)
    try:
        return instant.strftime(fmt)
    except ValueError:
        raise ExpressionError(f"format_date(): cannot format with {describe(fmt)}") from None


_TIME_DIRECTIVES = re.compile(r"%[HIMSfpzZcX]")


def parse_date(value: Any, fmt: Any, timezone: Any = None) -> str | None:
    """Read a date or date-time written in a `strptime` pattern and write it as ISO-8601.

    For the dates people and old systems write: `parse_date('22/11/2026', '%d/%m/%Y')` →
    `'2026-11-22'`. A pattern without a time gives a date; with one it gives a date-time, read in
    `timezone` (an IANA name; default UTC) unless the pattern has `%z`, and written with its
    offset (`Z` for UTC). Parsing is exact: a value that does not match the pattern is an error
    naming the value and the pattern. `null` and blank text give `null`.

    Example:
        `parse_date('22/11/2026 14:05', '%d/%m/%Y %H:%M', 'Europe/Berlin')`
        → `'2026-11-22T14:05:00+01:00'`.
    """
    text = _text("parse_date", value, "a date")
    if text is None:
        return None
    if not isinstance(fmt, str) or not fmt.strip():
        raise ExpressionError(f"parse_date(): the format must be text, got {json_type(fmt)}")
    if len(fmt) > MAX_FORMAT_LENGTH:
        raise ExpressionError(
            f"parse_date(): the format is {len(fmt)} characters long;"
            f" the limit is {MAX_FORMAT_LENGTH}"
        )
    zone = resolve_zone(timezone, "parse_date")
    try:
        parsed = datetime.strptime(text, fmt)
    except (ValueError, OverflowError):
        raise ExpressionError(
            f"parse_date(): {describe(value)} does not match the format {describe(fmt)}"
        ) from None
    if not _TIME_DIRECTIVES.search(fmt):
        return parsed.date().isoformat()
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone or UTC)
    elif zone is not None:
        parsed = parsed.astimezone(zone)
    return iso_format(parsed)
