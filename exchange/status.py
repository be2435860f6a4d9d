"""Runtime status of applications per environment, as workers report it.

Workers write each transition to one Redis hash (contract.STATUSES_KEY); the supervisor mirrors it onto its
Placement rows (apps.mirror).
"""

import math
import time

from . import events, signing
from .contract import RUNTIME_STATES, STATUSES_KEY, status_field


def write(redis, app, environment, state, error="", traceback="", now=None):
    """Record a transition and announce it (exchange.events), so that every process drops its cached view at once."""
    entry = {"app": app, "environment": environment, "state": state, "error": error, "traceback": traceback,
             "at": now if now is not None else time.time()}
    pipe = redis.pipeline(transaction=False)
    pipe.hset(STATUSES_KEY, status_field(app, environment), signing.dumps(entry))
    events.publish(pipe, events.PLACEMENT, app=app, environment=environment, state=state, error=error or None,
                   at=entry["at"])
    pipe.execute()
    return entry


def read(redis, app, environment):
    return decode(redis.hget(STATUSES_KEY, status_field(app, environment)), app, environment)


def forget(redis, app, environments):
    if environments:
        redis.hdel(STATUSES_KEY, *[status_field(app, env) for env in environments])


def fetch(redis, fields):
    """The reported entries for FIELDS (``status_field`` names) in one HMGET: None where none or malformed."""
    if not fields:
        return []
    return [decode(raw, *field.split("/", 1)) for field, raw in zip(fields, redis.hmget(STATUSES_KEY, fields))]


def decode(raw, app, environment):
    """A status entry, or None when RAW is missing, not signed with APP_SHARED_SECRET, malformed, or signed for
    another application or environment (an entry copied to another field)."""
    entry = signing.loads_or_none(raw)
    if not isinstance(entry, dict) or entry.get("state") not in RUNTIME_STATES:
        return None
    if entry.get("app") != app or entry.get("environment") != environment:
        return None
    at = entry.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or not 0 <= at < 1e11:
        return None
    if not all(isinstance(entry.get(key) or "", str) for key in ("error", "traceback")):
        return None
    return entry
