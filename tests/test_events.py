"""exchange.events: what is published is JSON as json.dumps writes it, whatever the values."""

import json

import pytest

from exchange import events


@pytest.mark.parametrize("event", [
    {"type": "environment", "name": "env_a", "status": "online", "problem": None},
    {"type": "placement", "app": "crm", "environment": "env_a", "state": "error", "at": 1764410000.123456,
     "error": 'it said "no" \\ and ümlauts\n\u2028, then stopped'},
    {"type": "cache", "action": "rebuilt", "count": 3, "ok": True, "not": False, "nan": float("nan")},
    {"type": "app", "name": "crm", "nested": {"a": [1, 2]}},
])
def test_an_event_is_written_as_json_dumps_writes_it(event):
    assert events.encode(event) == json.dumps(event)
    if event.get("nan") is None:
        assert json.loads(events.encode(event)) == event
