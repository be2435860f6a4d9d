"""The supervisor's Prometheus metrics (docs/architecture.md, "Operations endpoints"), exposed by /metrics with
prometheus-client.

* State, read from the supervisor's database at scrape time in a constant number of queries (StateCollector):
  ``appsup_environment_up{environment}`` (1 only while online), ``appsup_environment_status{environment,status}``
  (1 for its current status), ``appsup_environment_last_heartbeat_timestamp_seconds{environment}``,
  ``appsup_placements{state}`` (an offline environment's placements count as unknown, as the pages show them),
  ``appsup_applications{desired_state}``, ``appsup_applications_drifting``,
  ``appsup_controller_last_pass_timestamp_seconds`` and ``appsup_controller_redis_up``.
* ``appsup_command_duration_seconds{command,environment,outcome}``: a histogram of lifecycle steps, whichever process
  ran them, kept in the database (monitoring.models.CommandDuration explains why) and read at scrape time.
* ``appsup_proxy_requests_total{app,code}``: requests through this process's access proxy, by application and status
  class (2xx…5xx); counted in memory, so each web process counts its own, as Prometheus expects of a scrape target.
"""

from itertools import groupby

from django.db import models
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from apps.models import Application, Placement
from controller.models import ControllerState
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import contract

from .models import CommandDuration

# The outcome of a step that succeeded; failed ones are named by apps.lifecycle's failure kinds.
OK = "ok"
# The app label of a request for no known application: its name is whatever the client typed, and a label per name
# would let anyone grow the metrics without bound.
NO_APP = ""

# No appsup_…_created series beside each counter: Prometheus does not need them to see a restart.
disable_created_metrics()
registry = CollectorRegistry(auto_describe=False)  # auto_describe would query the database at registration
ProcessCollector(registry=registry)

PROXY_REQUESTS = Counter(
    "appsup_proxy_requests", "Requests answered by the access proxy, by application and status class.",
    ["app", "code"], registry=registry,
)


_proxy_series = {}  # (app, status // 100) -> its child of PROXY_REQUESTS: labels() costs 5 times the increment


def count_proxy_request(app, status):
    """Count one answer of the access proxy: APP is the application's name, or NO_APP."""
    key = (app, status // 100)
    series = _proxy_series.get(key)
    if series is None:
        series = _proxy_series[key] = PROXY_REQUESTS.labels(app, f"{key[1]}xx")
    series.inc()


def observe_step(command, step):
    """Count one lifecycle step (apps.lifecycle.Step) of COMMAND."""
    CommandDuration.objects.observe(command, step.environment, OK if step.ok else step.kind, step.seconds)


class StateCollector:
    """Environments, placements, applications and the controller, as the database has them now."""

    def collect(self):
        now = timezone.now()
        # Plain values, not model instances: at 10,000 environments instances cost 400 ms per scrape.
        statuses = registry_mirror.statuses(now)
        heartbeats = Environment.objects.order_by().values_list("name", "last_heartbeat_at")
        yield from self._environments(statuses, heartbeats)
        placements = GaugeMetricFamily("appsup_placements", "Placements (an application on one environment) by "
                                       "runtime state; unknown while their environment is offline.", labels=["state"])
        counts = dict.fromkeys((*contract.RUNTIME_STATES, contract.UNKNOWN), 0)
        # Counted by the database as shown (a handful of rows), not per environment and state (10,000s of rows).
        shown = models.Case(models.When(environment__in=Environment.objects.online(now), then=models.F("state")),
                            default=models.Value(contract.UNKNOWN))
        rows = Placement.objects.order_by().annotate(shown=shown).values_list("shown").annotate(n=Count("pk"))
        for state, n in rows:
            counts[state] = counts.get(state, 0) + n
        for state, n in counts.items():
            placements.add_metric([state], n)
        yield placements

        applications = GaugeMetricFamily("appsup_applications", "Applications by desired state.",
                                          labels=["desired_state"])
        desired = dict.fromkeys(contract.DESIRED_STATES, 0)
        desired.update(Application.objects.order_by().values_list("desired_state").annotate(n=Count("pk")))
        for state, n in desired.items():
            applications.add_metric([state], n)
        yield applications
        yield GaugeMetricFamily("appsup_applications_drifting", "Applications with a placement whose mirrored state "
                                "is not the desired one (what the controller acts on).",
                                value=Application.objects.drifting().count())
        yield from self._controller()

    @staticmethod
    def _environments(statuses, heartbeats):
        """STATUSES: {name: status}; HEARTBEATS: (name, last heartbeat or None) of each environment."""
        up = GaugeMetricFamily("appsup_environment_up", "1 while the environment is online, else 0 (degraded or "
                               "offline).", labels=["environment"])
        status = GaugeMetricFamily("appsup_environment_status", "1 for the environment's current status.",
                                   labels=["environment", "status"])
        heartbeat = GaugeMetricFamily("appsup_environment_last_heartbeat_timestamp_seconds",
                                      "When the environment last sent a heartbeat (Unix time).", labels=["environment"])
        for name, current in sorted(statuses.items()):
            up.add_metric([name], 1 if current == contract.ONLINE else 0)
            for each in contract.ENVIRONMENT_STATUSES:
                status.add_metric([name, each], 1 if current == each else 0)
        for name, at in sorted(heartbeats, key=lambda row: row[0]):
            if at is not None:
                heartbeat.add_metric([name], at.timestamp())
        return up, status, heartbeat

    @staticmethod
    def _controller():
        state = ControllerState.current()
        if state.seen_at is not None:  # no controller has ever run: no sample, rather than 1970
            yield GaugeMetricFamily("appsup_controller_last_pass_timestamp_seconds",
                                    "When the acting controller (runsupervisor) last completed a pass (Unix time).",
                                    value=state.seen_at.timestamp())
        yield GaugeMetricFamily("appsup_controller_redis_up", "1 when the controller's last pass reached Redis.",
                                value=0 if state.redis_error else 1)


class CommandDurationCollector:
    """The command-duration histogram, from monitoring.models.CommandDuration."""

    def collect(self):
        family = HistogramMetricFamily(
            "appsup_command_duration_seconds", "Lifecycle steps (one command on one environment), by command, "
            "environment and outcome, run by an operator or the controller.",
            labels=["command", "environment", "outcome"])
        rows = CommandDuration.objects.order_by("command", "environment", "outcome", "le").values_list(
            "command", "environment", "outcome", "le", "count", "seconds")
        for labels, buckets in groupby(rows, key=lambda row: row[:3]):
            buckets = list(buckets)
            family.add_metric(list(labels), [(floatToGoString(row[3]), row[4]) for row in buckets],
                              sum_value=buckets[-1][5])
        yield family


registry.register(StateCollector())
registry.register(CommandDurationCollector())
