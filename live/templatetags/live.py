from django import template

from live.moments import moment_html

register = template.Library()


@register.filter
def moment(value, empty="–"):
    """``{{ value|moment }}``: a datetime as the admin shows them all (live.moments)."""
    return moment_html(value, empty=empty)
