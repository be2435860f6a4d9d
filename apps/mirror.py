"""Mirror the runtime statuses workers report (exchange.status) onto the supervisor's Placement rows, with one HMGET
for all the rows and one UPDATE for what changed.
"""

from datetime import datetime
from datetime import timezone as dt_timezone

from exchange import status
from exchange.contract import STATUSES_KEY, status_field
from supervisor_project import bulk

STATUS_FIELDS = ("state", "error", "traceback", "state_at")


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
    changed = [p for p, entry in zip(placements, status.fetch(redis, fields)) if apply(p, entry)]
    save(changed)
    return changed


def save(placements):
    """Write the mirrored status of PLACEMENTS (changed by ``apply``) in one statement."""
    bulk.update(placements, STATUS_FIELDS)


def refresh_all(redis):
    """Mirror every reported status onto its placement: one HGETALL, one SELECT of plain rows, one UPDATE for
    what changed. Returns the names of the applications whose placements changed."""
    from .models import Placement

    reported = redis.hgetall(STATUSES_KEY)
    changed, apps = [], set()
    rows = Placement.objects.values_list("pk", "application__name", "environment__name", "state", "error", "state_at")
    for pk, app, env, state, error, state_at in rows:
        entry = status.decode(reported.get(status_field(app, env).encode()), app, env)
        if is_newer(entry, state_at):
            placement = Placement(pk=pk, state=state, error=error, state_at=state_at)
            apply(placement, entry)
            changed.append(placement)
            apps.add(app)
    save(changed)
    return sorted(apps)
