"""Reading admin pages in tests."""

import re

from django.contrib.messages import get_messages


def changelist_row(response, name):
    """The changelist row whose first column links NAME, as HTML."""
    rows = re.findall(r"<tr>.*?</tr>", response.content.decode(), re.DOTALL)
    matches = [r for r in rows if re.search(rf"<th[^>]*><a [^>]*>{re.escape(name)}</a></th>", r)]
    assert len(matches) == 1, f"no single row for {name}"
    return matches[0]


def messages_of(response):
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
