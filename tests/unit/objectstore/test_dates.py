"""HTTP dates the objectstore writes (Last-Modified, Date): RFC 9110's IMF-fixdate, formatted by hand."""

from __future__ import annotations

import datetime
import email.utils

import pytest

from fabric.objectstore.app import date_header
from fabric.objectstore.objects import http_date


@pytest.mark.parametrize("value", [
    datetime.datetime(2026, 12, 6, 3, 1, 32, 484546),
    datetime.datetime(2000, 1, 1),
    datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime.datetime(1999, 10, 4, 9, 5, 7),
])
def test_an_http_date_is_what_the_standard_library_writes(value):
    expected = email.utils.format_datetime(value.replace(tzinfo=datetime.UTC, microsecond=0), usegmt=True)
    assert http_date(value) == expected


def test_the_date_header_is_now():
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    stated = email.utils.parsedate_to_datetime(date_header())
    after = datetime.datetime.now(datetime.UTC)
    assert before <= stated <= after
