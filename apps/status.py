"""Runtime status of applications per environment.

Workers write each transition to one Redis hash (contract.STATUSES_KEY); the supervisor mirrors what it shows
onto its Placement rows with one HMGET for all the rows of a page.
"""

import json
import time
from datetime import datetime, timezone as dt_timezone

from supervisor_project import bulk
from supervisor_project.contract import STATUSES_KEY, status_field


STATUS_FIELDS = ("state", "error", "traceback", "state_at")


def write(redis, app, environment, state, error="", traceback="", now=None):
    entry = {"state": state, "error": error, "traceback": traceback, "at": now if now is not None else time.time()}
    redis.hset(STATUSES_KEY, status_field(app, environment), json.dumps(entry))
    return entry


def read(redis, app, environment):
    raw = redis.hget(STATUSES_KEY, status_field(app, environment))
    return json.loads(raw) if raw else None


def forget(redis, app, environments):
    if environments:
        redis.hdel(STATUSES_KEY, *[status_field(app, env) for env in environments])


def fetch(redis, fields):
    """The reported entries for FIELDS (``status_field`` names) in one HMGET: None where none or malformed."""
    if not fields:
        return []
    return [_decode(raw) for raw in redis.hmget(STATUSES_KEY, fields)]


def _decode(raw):
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("at"), (int, float)) else None


def is_newer(entry, state_at):
    """Whether a reported ENTRY is newer than what a placement last mirrored at STATE_AT."""
    return entry is not None and (state_at is None or _at(entry) > state_at)


def _at(entry):
    return datetime.fromtimestamp(entry["at"], tz=dt_timezone.utc)


def apply(placement, entry):
    """Copy a reported status onto a placement when it is newer. Returns True if it changed."""
    if not is_newer(entry, placement.state_at):
        return False
    placement.state = entry["state"]
    placement.error = entry.get("error") or ""
    placement.traceback = entry.get("traceback") or ""
    placement.state_at = _at(entry)
    return True


def refresh(redis, placements):
    """Bring placements up to date with Redis in one round trip and one write."""
    placements = list(placements)
    fields = [status_field(p.application.name, p.environment.name) for p in placements]
    changed = [p for p, entry in zip(placements, fetch(redis, fields)) if apply(p, entry)]
    save(changed)
    return changed


def save(placements):
    """Write the mirrored status of PLACEMENTS (changed by ``apply``) in one statement."""
    bulk.update(placements, STATUS_FIELDS)
