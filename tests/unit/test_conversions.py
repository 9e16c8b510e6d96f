"""Messy real-world inputs through the templates a workflow's `fields:` would hold, table-driven.

Each row is what a caller might send and what the CRM should get; a bad value fails with an
error that names the field (`fields.phone`) and the value. Countries: `iso_country` knows every
ISO 3166-1 code and name pycountry has (short, official and common names), plus a small table
of everyday names and native names (`USA`, `U.S.`, `UK`, `Deutschland`, `Holland`); it never
guesses, so a misspelling is an error (see docs/metadata.md, "Project functions").
"""

from __future__ import annotations

from typing import Any

import pytest

from uwf.errors import ExpressionError
from uwf.mapping import ValueMap, compile_value

PRIORITIES = ValueMap(
    "priority",
    {
        "P1": "urgent",
        "URGENT": "urgent",
        "CRITICAL": "urgent",
        "P2": "high",
        "HIGH": "high",
        "P3": "normal",
        "MEDIUM": "normal",
        "NORMAL": "normal",
        "P4": "low",
        "LOW": "low",
    },
)
FIELDS = {
    "phone": "{{ e164(input.phone, input.region) }}",
    "country": "{{ iso_country(input.country) }}",
    "opened_at": "{{ format_date(input.opened, `null`, input.zone) }}",
    "due_on": "{{ parse_date(input.due, input.due_format) }}",
    "priority": "{{ value_map('priority', upper(trim(input.priority))) }}",
}
COMPILED = {name: compile_value({name: template}) for name, template in FIELDS.items()}


def convert(name: str, data: dict[str, Any]) -> Any:
    return COMPILED[name].evaluate({"input": data}, {"priority": PRIORITIES}, "fields")[name]


@pytest.mark.parametrize(
    ("phone", "region", "expected"),
    [
        ("+1 (415) 555-0132", None, "+14155550132"),
        ("0044 20 7946 0958", None, "+442079460958"),
        ("415.555.0132", "US", "+14155550132"),
        ("415.555.0132", "us", "+14155550132"),
        ("(415) 555-0132 ext. 7", "US", "+14155550132"),
        ("+44 (0) 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("030 901820", "DE", "+4930901820"),
        ("tel:+33 1 42 68 53 00", None, "+33142685300"),
        (4155550132, "US", "+14155550132"),
        ("  ", "US", None),
        (None, None, None),
    ],
)
def test_phone_numbers(phone: Any, region: Any, expected: str | None) -> None:
    assert convert("phone", {"phone": phone, "region": region}) == expected


@pytest.mark.parametrize(
    ("phone", "region", "message"),
    [
        (
            "garbage",
            "US",
            "fields.phone: e164(): 'garbage' is not a valid phone number in region US",
        ),
        (
            "555-0132",
            "US",
            "fields.phone: e164(): '555-0132' is not a valid phone number in region US",
        ),
        ("+1 415 555", None, "fields.phone: e164(): '+1 415 555' is not a valid phone number"),
        (
            "415.555.0132",
            None,
            "fields.phone: e164(): '415.555.0132' has no country code; write it as +<country "
            "code>… or pass the region it belongs to, e.g. e164(phone, 'GB')",
        ),
        (
            "415.555.0132",
            "Narnia",
            "fields.phone: e164(): unknown region 'Narnia'; pass an ISO 3166-1 alpha-2 code such "
            "as 'US' or 'GB'",
        ),
    ],
)
def test_bad_phone_numbers_name_the_field_and_value(phone: Any, region: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        convert("phone", {"phone": phone, "region": region})
    assert info.value.message == message
    assert info.value.context["field"] == "fields.phone"


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        ("United States", "US"),
        ("USA", "US"),
        ("u.s.", "US"),
        ("U.S.A.", "US"),
        ("usa ", "US"),
        ("United States of America", "US"),
        ("840", "US"),
        ("Deutschland", "DE"),
        ("germany", "DE"),
        ("deu", "DE"),
        ("UK", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("The Netherlands", "NL"),
        ("Holland", "NL"),
        ("Côte d’Ivoire", "CI"),
        ("Ivory Coast", "CI"),
        ("South Korea", "KR"),
        ("Korea, Republic of", "KR"),
        (None, None),
    ],
)
def test_countries(country: Any, expected: str | None) -> None:
    assert convert("country", {"country": country}) == expected


@pytest.mark.parametrize("country", ["Atlantis", "Untied States", "U.S.S.R.", "Europe"])
def test_unknown_countries_name_the_field_and_value(country: str) -> None:
    with pytest.raises(ExpressionError) as info:
        convert("country", {"country": country})
    assert info.value.message == (
        f"fields.country: iso_country(): {country!r} is not a country name or ISO 3166-1 "
        "code I know"
    )


@pytest.mark.parametrize(
    ("opened", "zone", "expected"),
    [
        ("2026-11-22", None, "2026-11-22T00:00:00Z"),
        ("2026-11-22T10:15:30+02:00", None, "2026-11-22T10:15:30+02:00"),
        ("2026-11-22T10:15:30+02:00", "UTC", "2026-11-22T08:15:30Z"),
        ("2026-11-22T10:15:30.250Z", "Europe/Berlin", "2026-11-22T11:15:30.250+01:00"),
        ("2026-11-22 10:15", "America/New_York", "2026-11-22T10:15:00-05:00"),
        ("2026-07-01 10:15", "america/new_york", "2026-07-01T10:15:00-04:00"),  # summer time
        ("2026-03-29T00:30:00Z", "Europe/Berlin", "2026-03-29T01:30:00+01:00"),
        (1795350930123, None, "2026-11-22T12:35:30.123Z"),  # epoch milliseconds
        (1795350930, None, "2026-11-22T12:35:30Z"),  # epoch seconds
        ("", None, None),
    ],
)
def test_dates_and_time_zones(opened: Any, zone: Any, expected: str | None) -> None:
    assert convert("opened_at", {"opened": opened, "zone": zone}) == expected


@pytest.mark.parametrize(
    ("due", "fmt", "expected"),
    [
        ("22/11/2026", "%d/%m/%Y", "2026-11-22"),
        ("11/22/2026", "%m/%d/%Y", "2026-11-22"),
        (" 22.11.2026 ", "%d.%m.%Y", "2026-11-22"),
        ("22 Nov 2026", "%d %b %Y", "2026-11-22"),
        ("22/11/2026 14:05", "%d/%m/%Y %H:%M", "2026-11-22T14:05:00Z"),
        ("2026-11-22T10:00:00+0200", "%Y-%m-%dT%H:%M:%S%z", "2026-11-22T10:00:00+02:00"),
        (None, "%d/%m/%Y", None),
    ],
)
def test_dates_in_a_given_format(due: Any, fmt: str, expected: str | None) -> None:
    assert convert("due_on", {"due": due, "due_format": fmt}) == expected


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "opened_at",
            {"opened": "22/11/2026"},
            "fields.opened_at: format_date(): '22/11/2026' is not an ISO-8601 date or date-time",
        ),
        (
            "opened_at",
            {"opened": "2026-11-22", "zone": "Mars/Olympus"},
            "fields.opened_at: format_date(): unknown time zone 'Mars/Olympus'; use an IANA name "
            "such as 'UTC' or 'Europe/Berlin'",
        ),
        (
            "opened_at",
            {"opened": "2026-02-30"},
            "fields.opened_at: format_date(): '2026-02-30' is not an ISO-8601 date or date-time",
        ),
        (
            "due_on",
            {"due": "2026-11-22", "due_format": "%d/%m/%Y"},
            "fields.due_on: parse_date(): '2026-11-22' does not match the format '%d/%m/%Y'",
        ),
        (
            "due_on",
            {"due": "31/02/2026", "due_format": "%d/%m/%Y"},
            "fields.due_on: parse_date(): '31/02/2026' does not match the format '%d/%m/%Y'",
        ),
    ],
)
def test_bad_dates_name_the_field_and_value(name: str, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        convert(name, data)
    assert info.value.message == message


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ("P1", "urgent"),
        ("p1", "urgent"),
        (" P1 ", "urgent"),
        ("URGENT", "urgent"),
        ("Critical", "urgent"),
        ("High", "high"),
        ("p2", "high"),
        ("medium", "normal"),
        ("\tP3\n", "normal"),
        ("Low", "low"),
    ],
)
def test_priorities(priority: str, expected: str) -> None:
    assert convert("priority", {"priority": priority}) == expected


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        (
            "P9",
            "fields.priority: value 'P9' is not in value map 'priority' (known: CRITICAL, HIGH, "
            "LOW, MEDIUM, NORMAL, P1, P2, P3, P4, URGENT)",
        ),
        (
            "asap!",
            "fields.priority: value 'ASAP!' is not in value map 'priority' (known: CRITICAL, "
            "HIGH, LOW, MEDIUM, NORMAL, P1, P2, P3, P4, URGENT)",
        ),
    ],
)
def test_unknown_priorities_name_the_field_the_map_and_the_value(
    priority: str, message: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        convert("priority", {"priority": priority})
    assert info.value.message == message
    assert info.value.context == {"value_map": "priority", "field": "fields.priority"}


def test_a_number_where_text_is_expected_names_the_field() -> None:
    with pytest.raises(ExpressionError) as info:
        convert("priority", {"priority": 1})
    assert info.value.message.startswith("fields.priority: expression `value_map('priority', ")
    assert "invalid type for value: 1" in info.value.message
