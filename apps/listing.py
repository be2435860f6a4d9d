"""APP, the JSON API's shape of an application (``app_dict``), and a page of them as ``GET /api/apps/`` lists it.

Built from plain rows rather than model instances: loading 10,000 applications with their placements through the
ORM took over a second, rows take a few dozen milliseconds.
"""


from environments.models import Environment
from exchange.contract import UNKNOWN
from supervisor_project.api_auth import iso

from .models import Application, Placement

PLACEMENT_COLUMNS = ("pk", "application_id", "environment_id", "state", "error", "state_at")


def app_page(page, now):
    """APP for each application of PAGE (its rows: the limit plus one). Three queries, whatever the size of the
    table or of the page; the database only (the controller keeps it mirrored from what workers report)."""
    apps = list(page.rows(Application.objects.values_list("pk", "name", "display_name", "desired_state")))
    rows = list(
        Placement.objects.filter(application_id__in=[pk for pk, *_ in apps])
        .order_by("application_id", "position")
        .values_list(*PLACEMENT_COLUMNS)
    )
    environments = Environment.objects.in_bulk({env_id for _, _, env_id, *_ in rows})
    online = {pk: env.is_online(now) for pk, env in environments.items()}
    by_app = {}
    for _, app_id, env_id, state, failure, state_at in rows:
        shown = state if online[env_id] else UNKNOWN
        by_app.setdefault(app_id, []).append((environments[env_id].name, status_dict(shown, failure, state_at)))
    return [app_dict(name, display_name, desired_state, by_app.get(pk, []))
            for pk, name, display_name, desired_state in apps]


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
