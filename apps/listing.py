"""APP, the JSON API's shape of an application (``app_dict``), and a page of them as ``GET /api/apps/`` lists it.

Built from plain rows rather than model instances: loading 10,000 applications with their placements through the
ORM took over a second, rows take a few dozen milliseconds.
"""


from api.auth import iso
from environments.models import Environment
from exchange.contract import UNKNOWN

from .models import Application, Domain, Placement

PLACEMENT_COLUMNS = ("application_id", "state", "error", "state_at")
# What Environment.is_online needs, read in the same query (a join), not one query per batch of environments.
ENVIRONMENT_COLUMNS = ("name", "last_heartbeat_at", "stopped_at", "rejected")


def app_page(page, now):
    """APP for each application of PAGE (its rows: the limit plus one). Three queries, whatever the size of the
    table or of the page (and one for custom domains); the database only (the controller keeps it mirrored from what workers report)."""
    apps = list(page.rows(Application.objects.values_list("pk", "name", "display_name", "desired_state",
                                                          "concurrency", "request_timeout")))
    rows = (
        Placement.objects.filter(application_id__in=[pk for pk, *_ in apps])
        .order_by("application_id", "position")
        .values_list(*PLACEMENT_COLUMNS, *(f"environment__{column}" for column in ENVIRONMENT_COLUMNS))
    )
    domains = {}
    for app_id, domain in Domain.objects.filter(application_id__in=[pk for pk, *_ in apps]).order_by(
            "name").values_list("application_id", "name"):
        domains.setdefault(app_id, []).append(domain)
    by_app = {}
    for app_id, state, failure, state_at, *environment in rows:
        env = Environment(**dict(zip(ENVIRONMENT_COLUMNS, environment)))
        shown = state if env.is_online(now) else UNKNOWN
        by_app.setdefault(app_id, []).append((env.name, status_dict(shown, failure, state_at)))
    return [app_dict(name, display_name, desired_state, by_app.get(pk, []), concurrency, request_timeout,
                     domains.get(pk, []))
            for pk, name, display_name, desired_state, concurrency, request_timeout in apps]


def status_dict(state, error, at):
    return {"state": state, "error": error or None, "at": iso(at)}


def app_dict(name, display_name, desired_state, placed, concurrency=None, request_timeout=None, domains=()):
    """APP, from PLACED: [(environment name, status_dict), …] in start order."""
    return {
        "name": name,
        "display_name": display_name or name,
        "environments": [env for env, _ in placed],
        "desired_state": desired_state,
        "statuses": dict(placed),
        "concurrency": concurrency,
        "request_timeout": request_timeout,
        "domains": list(domains),
    }
