"""Project functions: phone numbers, countries and dates, called directly and from templates."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwf.errors import ExpressionError
from uwf.mapping import (
    compile_expression,
    compile_value,
    e164,
    format_date,
    frozen_now,
    iso_country,
    now,
)

# -- e164 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "region", "expected"),
    [
        pytest.param("(415) 555-0132 ext. 7", "US", "+14155550132", id="us-parens-extension"),
        pytest.param("415.555.0132", "US", "+14155550132", id="us-dots"),
        pytest.param("+1 (212) 555-1234 x99", None, "+12125551234", id="intl-x-extension"),
        pytest.param("+44 20 7946 0958", None, "+442079460958", id="gb-plus"),
        pytest.param("+44 20 7946 0958", "US", "+442079460958", id="plus-beats-region"),
        pytest.param("0044 20 7946 0958", None, "+442079460958", id="gb-00-no-region"),
        pytest.param("0044 20 7946 0958", "US", "+442079460958", id="gb-00-us-region"),
        pytest.param("020 7946 0958", "GB", "+442079460958", id="gb-national"),
        pytest.param("+44 (0) 20 7946 0958", None, "+442079460958", id="gb-trunk-zero"),
        pytest.param("  +49 30 901820  ", None, "+4930901820", id="de-spaces"),
        pytest.param("030-901820", "de", "+4930901820", id="region-any-case"),
        pytest.param("tel:+1-415-555-0132", None, "+14155550132", id="tel-uri"),
        pytest.param("011 44 20 7946 0958", "US", "+442079460958", id="us-idd-011"),
        pytest.param(4155550132, "US", "+14155550132", id="json-number"),
        pytest.param(4155550132.0, "US", "+14155550132", id="json-integral-float"),
        pytest.param("+33 1 23 45 67 89", "", "+33123456789", id="blank-region-is-none"),
        pytest.param(None, "US", None, id="null-stays-null"),
        pytest.param("   ", "US", None, id="blank-is-null"),
    ],
)
def test_e164_normalises_messy_numbers(phone: Any, region: Any, expected: str | None) -> None:
    assert e164(phone, region) == expected


@pytest.mark.parametrize(
    ("phone", "region", "message"),
    [
        pytest.param(
            "not a phone",
            "US",
            "e164(): 'not a phone' is not a valid phone number in region US",
            id="text",
        ),
        pytest.param("+1 555", None, "e164(): '+1 555' is not a valid phone number", id="short"),
        pytest.param(
            "555-0132", "US", "e164(): '555-0132' is not a valid phone number in region US", id="7d"
        ),
        pytest.param(
            "020 7946 0958",
            None,
            "e164(): '020 7946 0958' has no country code; write it as +<country code>… or pass"
            " the region it belongs to, e.g. e164(phone, 'GB')",
            id="national-without-region",
        ),
        pytest.param(
            "020 7946 0958",
            "XX",
            "e164(): unknown region 'XX'; pass an ISO 3166-1 alpha-2 code such as 'US' or 'GB'",
            id="unknown-region",
        ),
        pytest.param(
            "020 7946 0958", "GBR", "e164(): unknown region 'GBR'", id="alpha-3-is-no-region"
        ),
        pytest.param(415.5, "US", "e164(): 415.5 is not a phone number", id="fractional-number"),
        pytest.param(
            True, "US", "e164(): expected a phone number as text, got a boolean", id="boolean"
        ),
        pytest.param("1" * 300, "US", "characters long; the limit is 256", id="too-long"),
    ],
)
def test_e164_errors_name_the_value(phone: Any, region: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        e164(phone, region)

    assert message in info.value.message


# -- iso_country ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("United States", "US"),
        ("usa", "US"),
        ("U.S.A.", "US"),
        ("United States of America", "US"),
        ("us", "US"),
        ("DEU", "DE"),
        ("de", "DE"),
        ("276", "DE"),
        (276, "DE"),
        ("40", "AT"),
        ("040", "AT"),
        ("Côte d'Ivoire", "CI"),
        ("cote d’ivoire", "CI"),
        ("Ivory Coast", "CI"),
        ("UK", "GB"),
        ("Great Britain", "GB"),
        ("United Kingdom of Great Britain and Northern Ireland", "GB"),
        ("Deutschland", "DE"),
        ("  germany  ", "DE"),
        ("The Netherlands", "NL"),
        ("Holland", "NL"),
        ("Korea, Republic of", "KR"),
        ("Republic of Korea", "KR"),
        ("South Korea", "KR"),
        ("North Korea", "KP"),
        ("Bosnia & Herzegovina", "BA"),
        ("Russia", "RU"),
        ("Russian Federation", "RU"),
        ("Czech Republic", "CZ"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Vietnam", "VN"),
        ("Viet Nam", "VN"),
        ("Taiwan", "TW"),
        ("Holy See", "VA"),
        ("Congo", "CG"),
        ("Democratic Republic of the Congo", "CD"),
        ("St. Lucia", "LC"),
        ("Virgin Islands, U.S.", "VI"),
        ("British Virgin Islands", "VG"),
        (None, None),
        ("", None),
    ],
)
def test_iso_country_reads_codes_and_names(given: Any, expected: str | None) -> None:
    assert iso_country(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("Narnia", "iso_country(): 'Narnia' is not a country name or ISO 3166-1 code I know"),
        ("Germny", "iso_country(): 'Germny' is not a country name"),
        ("999", "iso_country(): '999' is not a country name"),
        ("日本", "iso_country(): '日本' is not a country name"),
        ("...", "iso_country(): '...' is not a country name"),
        (2.5, "iso_country(): 2.5 is not a country"),
        (["DE"], "iso_country(): expected a country as text, got an array"),
    ],
)
def test_iso_country_errors_name_the_value(given: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        iso_country(given)

    assert message in info.value.message


# -- now and format_date --------------------------------------------------------------------


def test_now_is_iso_utc_with_milliseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now())


def test_frozen_now_pins_every_call_in_the_block() -> None:
    at = datetime(2026, 11, 22, 10, 15, 30, 123456, tzinfo=UTC)
    template = compile_value({"a": "{{ now() }}", "b": "at {{ now() }}"})

    with frozen_now(at):
        result = template.evaluate({})

    assert result == {"a": "2026-11-22T10:15:30.123Z", "b": "at 2026-11-22T10:15:30.123Z"}
    assert now() != "2026-11-22T10:15:30.123Z"


def test_now_agrees_with_itself_within_one_expression() -> None:
    assert compile_expression("now() == now()").evaluate({}) is True


def test_frozen_now_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"), frozen_now(datetime(2026, 1, 1)):
        pass  # pragma: no cover - the context manager refuses to enter


@pytest.mark.parametrize(
    ("value", "fmt", "zone", "expected"),
    [
        ("2024-03-05T10:15:00+02:00", None, None, "2024-03-05T10:15:00+02:00"),
        ("2024-03-05T10:15:00Z", None, None, "2024-03-05T10:15:00Z"),
        ("2024-03-05T10:15:00z", None, None, "2024-03-05T10:15:00Z"),
        ("2024-03-05T10:15:00+00:00", None, None, "2024-03-05T10:15:00Z"),
        ("2024-03-05 10:15:00", None, None, "2024-03-05T10:15:00Z"),
        ("2024-03-05T10:15:00.5Z", None, None, "2024-03-05T10:15:00.500Z"),
        ("2024-03-05T10:15:00.123456Z", None, None, "2024-03-05T10:15:00.123456Z"),
        ("2024-03-05", None, None, "2024-03-05T00:00:00Z"),
        ("  2024-03-05  ", "%d/%m/%Y", None, "05/03/2024"),
        (1700000000, None, None, "2023-11-14T22:13:20Z"),
        (1700000000.25, None, None, "2023-11-14T22:13:20.250Z"),
        (1700000000123, None, None, "2023-11-14T22:13:20.123Z"),
        (-86400, None, None, "1969-12-31T00:00:00Z"),
        ("2024-03-05T08:15:00Z", "%Y-%m-%d %H:%M", "Europe/Berlin", "2024-03-05 09:15"),
        ("2024-07-05T08:15:00Z", None, "europe/berlin", "2024-07-05T10:15:00+02:00"),
        ("2024-03-05T10:15:00", None, "America/New_York", "2024-03-05T10:15:00-05:00"),
        ("2024-03-05", None, "Asia/Kolkata", "2024-03-05T00:00:00+05:30"),
        ("2024-03-05T10:15:00+02:00", None, "UTC", "2024-03-05T08:15:00Z"),
        ("2024-03-05T10:15:00+02:00", "%B %d, %Y", None, "March 05, 2024"),
        (1700000000, "", "", "2023-11-14T22:13:20Z"),
        (None, "%Y", "UTC", None),
        ("", None, None, None),
    ],
)
def test_format_date_parses_and_writes(value: Any, fmt: Any, zone: Any, expected: Any) -> None:
    assert format_date(value, fmt, zone) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "zone", "message"),
    [
        ("2024-13-05", None, None, "'2024-13-05' is not an ISO-8601 date or date-time"),
        ("05/03/2024", None, None, "'05/03/2024' is not an ISO-8601 date or date-time"),
        ("yesterday", None, None, "'yesterday' is not an ISO-8601 date or date-time"),
        ("2024-03-05", None, "Mars/Base", "unknown time zone 'Mars/Base'; use an IANA name"),
        ("2024-03-05", None, "+02:00", "unknown time zone '+02:00'"),
        ("2024-03-05", None, 5, "unknown time zone 5"),
        ("2024-03-05", 5, None, "the format must be text, got a number"),
        ("2024-03-05", "%Y" * 60, None, "the format is 120 characters long; the limit is 100"),
        (1e30, None, None, "1e+30 is not a Unix time in years 1–9999"),
        (True, None, None, "expected an ISO-8601 date-time or epoch number, got a boolean"),
        ({"at": 1}, None, None, "got an object"),
        ("0001-01-01T00:00:00+05:00", None, "UTC", "is out of range in time zone 'UTC'"),
    ],
)
def test_format_date_errors_name_the_value(value: Any, fmt: Any, zone: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        format_date(value, fmt, zone)

    assert info.value.message.startswith("format_date(): ")
    assert message in info.value.message


# -- through templates ----------------------------------------------------------------------

CONTEXT: dict[str, Any] = {
    "input": {
        "phone": "020 7946 0958",
        "country": "Deutschland",
        "mobile": "+1 415 555 0132",
        "opened": "2024-03-05T08:15:00Z",
        "tz": "Europe/Berlin",
    }
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ e164(input.phone, 'GB') }}", "+442079460958"),
        ("{{ e164(input.mobile) }}", "+14155550132"),
        ("{{ e164(input.missing, 'GB') }}", None),
        ("{{ e164(coalesce(input.missing, input.mobile)) }}", "+14155550132"),
        ("{{ iso_country(input.country) }}", "DE"),
        ("{{ e164('030 901820', iso_country(input.country)) }}", "+4930901820"),
        ("{{ format_date(input.opened) }}", "2024-03-05T08:15:00Z"),
        ("{{ format_date(input.opened, '%H:%M', input.tz) }}", "09:15"),
        ("{{ format_date(input.opened, `null`, input.tz) }}", "2024-03-05T09:15:00+01:00"),
        ("{{ format_date(`1700000000123`) }}", "2023-11-14T22:13:20.123Z"),
        ("Call {{ e164(input.phone, 'GB') }} ({{ iso_country('uk') }})", "Call +442079460958 (GB)"),
    ],
)
def test_templates_call_the_functions(source: str, expected: Any) -> None:
    assert compile_value(source).evaluate(CONTEXT) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ e164(input.phone) }}", "'020 7946 0958' has no country code"),
        ("{{ e164(input.phone, 'GB', 'x') }}", "e164() takes at most 2 arguments, got 3"),
        ("{{ format_date(input.opened, 'a', 'UTC', `1`) }}", "takes at most 3 arguments, got 4"),
        ("{{ iso_country(input.opened) }}", "'2024-03-05T08:15:00Z' is not a country name"),
        ("{{ iso_country(input) }}", "iso_country"),
        ("{{ e164() }}", "e164"),
        ("{{ now(input.tz) }}", "now"),
        ("{{ format_date(input.opened, '%Y', 'Nowhere') }}", "unknown time zone 'Nowhere'"),
    ],
)
def test_template_errors_are_expression_errors(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_value(source).evaluate(CONTEXT)

    assert message in info.value.message


# -- properties -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
PHONEISH = st.text(alphabet="0123456789 +-().xext:", max_size=30)
DATEISH = st.text(alphabet="0123456789-:T Z+.z", max_size=30)
TEXT = st.one_of(JSON, PHONEISH, DATEISH)
OPTIONAL = st.one_of(
    st.none(), st.sampled_from(["GB", "US", "de", "UTC", "Europe/Berlin", "%Y-%m-%d %H:%M"]), JSON
)


def _outcome(func: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", func(*args)
    except ExpressionError as exc:
        return "error", exc.message


@settings(max_examples=200, deadline=None)
@given(value=TEXT, option=OPTIONAL, option2=OPTIONAL)
def test_functions_are_total_and_deterministic(value: Any, option: Any, option2: Any) -> None:
    for func, args in (
        (e164, (value, option)),
        (iso_country, (value,)),
        (format_date, (value, option, option2)),
        (format_date, (value, None, option)),
    ):
        first = _outcome(func, *args)  # anything but ExpressionError fails the test
        assert _outcome(func, *args) == first
        if first[0] == "ok":
            assert first[1] is None or isinstance(first[1], str)


_ARGS = st.sampled_from(
    [
        "input.x",
        "input",
        "'GB'",
        "'Europe/Berlin'",
        "'%Y'",
        "`null`",
        "`1e300`",
        "`-1`",
        "`[1, 2]`",
        "`{}`",
        "`true`",
        "input.x[0]",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["e164", "iso_country", "format_date", "now"]),
    args=st.lists(_ARGS, max_size=4),
    value=TEXT,
)
def test_templates_with_any_arguments_only_raise_expression_errors(
    name: str, args: list[str], value: Any
) -> None:
    compiled = compile_value(f"{{{{ {name}({', '.join(args)}) }}}}")
    try:
        result = compiled.evaluate({"input": {"x": value}})
    except ExpressionError:
        return
    assert result is None or isinstance(result, str)
