"""The admin's index as an overview (docs/operations.md, "What the admin shows"): applications by state,
environments by status, what needs attention, the last alerts, errors and lifecycle transitions, above Django's
list of models. Only reads the database (what the controller mirrored), in a constant number of queries whatever
the number of rows; each part only for a user who may view what it shows. Live: each part is a
``data-live-fragment`` that live/static/live/live.js reads again after an event.
"""

from django.db.models import Count
from django.utils import timezone

from alerts.models import Alert
from apps.models import Application, Placement
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import contract

RECENT = 8


def context(request, now=None):
    now = now or timezone.now()
    user = request.user
    found = {"overview": True}
    if user.has_perm("apps.view_application"):
        found.update(_applications(now))
    if user.has_perm("environments.view_environment"):
        found["environment_counts"] = _counted(
            Environment.objects.order_by().values_list(registry_mirror.status_expression(now)).annotate(n=Count("pk")),
            contract.ENVIRONMENT_STATUSES)
    if user.has_perm("alerts.view_alert"):
        found["show_alerts"] = True
        found["recent_alerts"] = list(Alert.objects.order_by("-at", "-pk")[:RECENT])
    return found


def _counted(rows, keys):
    counts = dict.fromkeys(keys, 0)
    for key, n in rows:
        counts[key] = counts.get(key, 0) + n
    return [{"key": key, "n": n} for key, n in counts.items()]


def _applications(now):
    applications = Application.objects.order_by()
    attention = applications.filter(applications.needing_attention(now))
    placements = Placement.objects.order_by()
    offline = Environment.objects.offline(now)
    by_state = placements.values_list("state").annotate(n=Count("pk"))
    counts = dict(by_state)
    for state, n in by_state.filter(environment__in=offline):
        counts[state] -= n
        counts[contract.UNKNOWN] = counts.get(contract.UNKNOWN, 0) + n
    return {
        "application_counts": _counted(applications.values_list("desired_state").annotate(n=Count("pk")),
                                       contract.DESIRED_STATES),
        "placement_counts": _counted(counts.items(), (*contract.RUNTIME_STATES, contract.UNKNOWN)),
        "attention_count": attention.count(),
        "attention": list(attention.order_by("name")[:RECENT]),
        "recent_errors": list(placements.filter(state=contract.ERROR).select_related("application", "environment")
                              .order_by("-state_at")[:RECENT]),
        "recent_transitions": list(placements.exclude(state_at=None).select_related("application", "environment")
                                   .order_by("-state_at")[:RECENT]),
    }


def index(site_index):
    """SITE_INDEX (AdminSite.index) with the overview in its context."""

    def overview_index(request, extra_context=None):
        return site_index(request, {**context(request), **(extra_context or {})})

    return overview_index
