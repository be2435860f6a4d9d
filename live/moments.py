"""Dates and times, shown one way everywhere in the admin: the time in the supervisor's zone (settings.TIME_ZONE),
with the zone named, and how long ago beside it — "2026-11-29 07:12:03 UTC · 12 s ago".

The relative part is rendered here and kept fresh in the browser by live/static/live/live.js, which recomputes it
every second from the ``datetime`` attribute of the ``<time data-live-time>`` element (the same rules: ``ago``).
"""

from django.utils import timezone
from django.utils.html import format_html

ABSOLUTE = "%Y-%m-%d %H:%M:%S %Z"
# (seconds in a unit, its symbol), largest first: "3 d", "2 h", "5 min", "12 s".
UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def absolute(moment):
    return timezone.localtime(moment).strftime(ABSOLUTE)


def ago(moment, now=None):
    """How long ago MOMENT was, in its largest whole unit: "12 s ago", "3 min ago"; "in 10 s" for the future."""
    seconds = int(((now or timezone.now()) - moment).total_seconds())
    size, symbol = next(((size, symbol) for size, symbol in UNITS if abs(seconds) >= size), UNITS[-1])
    amount = f"{abs(seconds) // size} {symbol}"
    return f"in {amount}" if seconds < 0 else f"{amount} ago"


def moment_html(moment, now=None, empty="never"):
    """MOMENT as ``<time>``: absolute time with zone, and the relative time the page's script keeps fresh."""
    if not moment:  # None, or "" for a template's missing variable
        return empty
    return format_html(
        '<time class="appsup-time" datetime="{}" data-live-time><span class="appsup-at">{}</span> · '
        '<span class="appsup-ago" data-ago>{}</span></time>',
        moment.isoformat(), absolute(moment), ago(moment, now),
    )
