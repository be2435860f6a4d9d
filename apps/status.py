"""Runtime status of applications per environment.

Workers write each transition to one Redis hash (contract.STATUSES_KEY); the supervisor mirrors what it shows
onto its Placement rows with one HMGET for all the rows of a page.
"""

import json
import time
from datetime import datetime, timezone as dt_timezone

from supervisor_project.contract import STATUSES_KEY, status_field

from .models import Placement


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


def apply(placement, entry):
    """Copy a reported status onto a placement when it is newer. Returns True if it changed."""
    at = datetime.fromtimestamp(entry["at"], tz=dt_timezone.utc)
    if placement.state_at is not None and at <= placement.state_at:
        return False
    placement.state = entry["state"]
    placement.error = entry.get("error") or ""
    placement.traceback = entry.get("traceback") or ""
    placement.state_at = at
    return True


def refresh(redis, placements):
    """Bring placements up to date with Redis in one round trip and one bulk write."""
    placements = list(placements)
    if not placements:
        return []
    fields = [status_field(p.application.name, p.environment.name) for p in placements]
    changed = []
    for placement, raw in zip(placements, redis.hmget(STATUSES_KEY, fields)):
        if raw is None:
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if apply(placement, entry):
            changed.append(placement)
    if changed:
        Placement.objects.bulk_update(changed, ["state", "error", "traceback", "state_at"])
    return changed
