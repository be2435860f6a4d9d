"""APP, the JSON API's shape of an application (``app_dict``), and every application as ``GET /api/apps/`` lists it.

The list is unpaginated (DESIGN.md fixes its shape), so it is built from plain rows rather than model instances:
loading 10,000 applications with their placements through the ORM took over a second, rows take a few dozen
milliseconds. Four queries whatever the number of applications.
"""

from django.utils import timezone

from environments.models import Environment
from exchange.contract import UNKNOWN
from supervisor_project.api_auth import iso

from . import refresh
from .models import Application, Placement

PLACEMENT_COLUMNS = ("pk", "application_id", "environment_id", "state", "error", "state_at")


def app_dicts(now=None):
    """(APP for every application in name order, a warning or None). Reads the database only: the controller
    keeps it mirrored from what workers report."""
    now = now or timezone.now()
    environments = {env.pk: env for env in Environment.objects.all()}
    online = {pk: env.is_online(now) for pk, env in environments.items()}
    apps = list(Application.objects.order_by("name").values_list("pk", "name", "display_name", "desired_state"))
    rows = Placement.objects.order_by("application_id", "position").values_list(*PLACEMENT_COLUMNS)
    by_app = {}
    for _, app_id, env_id, state, error, state_at in rows:
        shown = state if online[env_id] else UNKNOWN
        by_app.setdefault(app_id, []).append((environments[env_id].name, status_dict(shown, error, state_at)))
    listed = [app_dict(name, display_name, desired_state, by_app.get(pk, []))
              for pk, name, display_name, desired_state in apps]
    return listed, refresh.staleness_warning(now)


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
