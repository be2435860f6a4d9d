"""Dates and times as the admin shows them all (live.moments): local time with its zone, and how long ago."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.template import Context, Template

from live.moments import absolute, ago, moment_html

NOW = datetime(2026, 11, 29, 7, 12, 3, tzinfo=dt_timezone.utc)


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0 s ago"), (12, "12 s ago"), (59, "59 s ago"), (60, "1 min ago"), (3599, "59 min ago"),
    (3600, "1 h ago"), (86399, "23 h ago"), (86400, "1 d ago"), (40 * 86400, "40 d ago"),
    (-10, "in 10 s"), (-90, "in 1 min"),
])
def test_how_long_ago_is_said_in_its_largest_whole_unit(seconds, shown):
    assert ago(NOW - timedelta(seconds=seconds), now=NOW) == shown


def test_fractions_of_a_second_do_not_count():
    assert ago(NOW - timedelta(seconds=12.9), now=NOW) == "12 s ago"


def test_the_time_is_the_supervisors_local_time_with_its_zone(settings):
    assert absolute(NOW) == "2026-11-29 07:12:03 UTC"
    settings.TIME_ZONE = "Europe/Paris"
    assert absolute(NOW) == "2026-11-29 08:12:03 CET"


def test_a_moment_is_a_time_element_the_page_keeps_fresh():
    assert moment_html(NOW - timedelta(seconds=12), now=NOW) == (
        '<time class="appsup-time" datetime="2026-11-29T07:11:51+00:00" data-live-time><span class="appsup-at">2026-11-29 07:11:51 UTC</span> · '
        '<span class="appsup-ago" data-ago>12 s ago</span></time>')


def test_no_moment_says_so():
    assert moment_html(None) == "never"
    assert moment_html(None, empty="–") == "–"


def test_the_template_filter_shows_moments_the_same_way():
    rendered = Template("{% load live %}{{ at|moment }}|{{ missing|moment }}").render(Context({"at": NOW}))
    assert rendered.startswith('<time class="appsup-time" datetime="2026-11-29T07:12:03+00:00" data-live-time>')
    assert rendered.endswith("|–")
