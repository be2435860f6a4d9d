"""APP, the JSON API's shape of an application (``app_dict``), and every application as ``GET /api/apps/`` lists it.

The list is unpaginated (DESIGN.md fixes its shape), so it is built from plain rows rather than model instances:
loading 10,000 applications with their placements through the ORM took over a second, rows take a few dozen
milliseconds. Three queries and one HMGET whatever the number of applications; statuses that workers reported
since the last read are shown and mirrored into the database, as ``status.refresh`` does for a page of rows.
"""

from django.utils import timezone

from environments.models import Environment
from exchange.contract import UNKNOWN, status_field
from supervisor_project.api_auth import iso

from . import mirror as status_mirror
from . import refresh
from .models import Application, Placement

PLACEMENT_COLUMNS = ("pk", "application_id", "environment_id", "state", "error", "state_at")


def app_dicts(now=None):
    """(APP for every application in name order, a warning or None)."""
    now = now or timezone.now()
    environments = {env.pk: env for env in Environment.objects.all()}
    online = {pk: env.is_online(now) for pk, env in environments.items()}
    apps = list(Application.objects.order_by("name").values_list("pk", "name", "display_name", "desired_state"))
    names = {pk: name for pk, name, _, _ in apps}
    rows = list(Placement.objects.order_by("application_id", "position").values_list(*PLACEMENT_COLUMNS))

    fields = [status_field(names[app_id], environments[env_id].name) for _, app_id, env_id, *_ in rows]
    entries, warning = refresh.reported_statuses(fields)
    changed = []
    for i, entry in enumerate(entries):
        pk, app_id, env_id, state, error, state_at = rows[i]
        if status_mirror.is_newer(entry, state_at):
            placement = Placement(pk=pk, state=state, error=error, state_at=state_at)
            status_mirror.apply(placement, entry)
            changed.append(placement)
            rows[i] = (pk, app_id, env_id, placement.state, placement.error, placement.state_at)
    status_mirror.save(changed)

    by_app = {}
    for _, app_id, env_id, state, error, state_at in rows:
        shown = state if online[env_id] else UNKNOWN
        by_app.setdefault(app_id, []).append((environments[env_id].name, status_dict(shown, error, state_at)))
    listed = [app_dict(name, display_name, desired_state, by_app.get(pk, []))
              for pk, name, display_name, desired_state in apps]
    return listed, warning


def status_dict(state, error, at):
    return {"state": state, "error": error or None, "at": iso(at)}


def app_dict(name, display_name, desired_state, placed):
    """APP, from PLACED: [(environment name, status_dict), …] in start order."""
    return {
        "name": name,
        "display_name": display_name or name,
        "environments": [env for env, _ in placed],
        "desired_state": desired_state,
        "statuses": dict(placed),
    }
