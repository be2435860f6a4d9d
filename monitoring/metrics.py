"""The supervisor's Prometheus metrics (docs/architecture.md, "Operations endpoints"), exposed by /metrics with
prometheus-client (and monitoring.exposition for the series per environment).

* State, read from the supervisor's database at scrape time in a constant number of queries (environment_series,
  StateCollector): ``appsup_environment_up{environment}`` (1 only while online),
  ``appsup_environment_status{environment,status}`` (one series per environment, labelled with its current status,
  always 1), ``appsup_environment_last_heartbeat_timestamp_seconds{environment}``, ``appsup_placements{state}`` (an
  offline environment's placements count as unknown, as the pages show them), ``appsup_applications{desired_state}``,
  ``appsup_applications_drifting``,
  ``appsup_controller_last_pass_timestamp_seconds``, ``appsup_controller_redis_up``, and for each environment out
  of service ``appsup_environment_drain{environment,state}`` (state draining or drained, always 1) and
  ``appsup_environment_drain_left{environment}``.
* ``appsup_command_duration_seconds{command,environment,outcome}``: a histogram of lifecycle steps, whichever process
  ran them, kept in the database (monitoring.models.CommandDuration explains why) and read at scrape time.
* From Redis at scrape time, one read each (no series when Redis does not answer):
  ``appsup_registrations_rejected`` (registrations in Redis that do not verify, as the controller last counted
  them: no environment is made of them, and no series per name) and ``appsup_forged_locks_broken{lock}`` (holder
  values of the controller lease and the application and provision locks that did not verify and were broken,
  exchange.locks; lock is one of contract.FORGED_LOCK_KINDS).
* ``appsup_app_requests_in_flight{app}``, ``appsup_app_requests_queued{app}`` and
  ``appsup_app_requests_refused_total{app}``: each application's share of the worker web processes (workers.gate),
  summed over the processes and environments that reported it within exchange.load.STALE seconds; only
  applications that exist in the database (whatever names the reports carry), and only those reported.
* ``appsup_app_requests_total{app,environment,code}``, ``appsup_app_request_duration_seconds{app,environment}`` and
  ``appsup_app_errors_total{app,environment}``: every hosted request, counted by the worker web processes in Redis
  (exchange.applog); only applications and environments in the database (AppRequestsCollector says the bound).
* ``appsup_proxy_requests_total{app,code}``: requests through this process's access proxy, by application and status
  class (2xx…5xx); counted in memory, so each web process counts its own, as Prometheus expects of a scrape target.
"""

from itertools import groupby

import redis
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from apps.models import Application, Placement
from controller.models import ControllerState
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import applog, contract, locks
from exchange import load as load_report
from exchange.redis_client import supervisor_redis

from . import exposition
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
    """Placements, applications and the controller, as the database has them now (the series per environment
    are EnvironmentSeries')."""

    def collect(self):
        now = timezone.now()
        placements = GaugeMetricFamily("appsup_placements", "Placements (an application on one environment) by "
                                       "runtime state; unknown while their environment is offline.", labels=["state"])
        counts = dict.fromkeys((*contract.RUNTIME_STATES, contract.UNKNOWN), 0)
        # Counted by the database (a handful of rows, not one per environment and state): all of them by state, then
        # those on environments that are not online (found through the placements' index on their environment, and
        # usually few), which count as unknown instead. Twice as fast as one count of CASE online THEN state.
        by_state = Placement.objects.order_by().values_list("state").annotate(n=Count("pk"))
        offline = by_state.filter(environment__in=Environment.objects.offline(now))
        for state, n in by_state:
            counts[state] = counts.get(state, 0) + n
        for state, n in offline:
            counts[state] -= n
            counts[contract.UNKNOWN] += n
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
        yield from self._drains()

    @staticmethod
    def _drains():
        """Environments out of service (environments.drain): usually none, so a series for each such one only."""
        family = GaugeMetricFamily("appsup_environment_drain", "1 for each environment taken out of service, by "
                                   "state (draining: applications still to move away; drained); no series for "
                                   "environments in service.", labels=["environment", "state"])
        left = GaugeMetricFamily("appsup_environment_drain_left", "Applications a drain could not move away from "
                                 "the environment (stopped or left there, with the reason in the admin).",
                                 labels=["environment"])
        for environment in Environment.objects.filter(drain__isnull=False).select_related("drain").order_by("name"):
            family.add_metric([environment.name, environment.drain_state], 1)
            left.add_metric([environment.name], len(environment.drain_left))
        yield family
        yield left

    @staticmethod
    def _controller():
        state = ControllerState.current()
        if state.seen_at is not None:  # no controller has ever run: no sample, rather than 1970
            yield GaugeMetricFamily("appsup_controller_last_pass_timestamp_seconds",
                                    "When the acting controller (runsupervisor) last completed a pass (Unix time).",
                                    value=state.seen_at.timestamp())
        yield GaugeMetricFamily("appsup_controller_redis_up", "1 when the controller's last pass reached Redis.",
                                value=0 if state.redis_error else 1)


def environment_series(now=None):
    """The gauges with a series per environment (exposition.Gauge: 10,000 environments make 20,000 series), from
    one query of plain values: ``appsup_environment_up``, ``appsup_environment_status`` (one series per
    environment, its current status, always 1: a series per status that is not the current one, at 0, would
    double the series for nothing a query needs) and ``appsup_environment_last_heartbeat_timestamp_seconds``."""
    up = exposition.Gauge("appsup_environment_up", "1 while the environment is online, else 0 (degraded or "
                          "offline).", ["environment"])
    status = exposition.Gauge("appsup_environment_status", "The environment's current status, as a label (always "
                              "1; no series for the statuses it is not in).", ["environment", "status"])
    heartbeat = exposition.Gauge("appsup_environment_last_heartbeat_timestamp_seconds",
                                 "When the environment last sent a heartbeat (Unix time).", ["environment"])
    rows = (Environment.objects.order_by("name")
            .values_list("name", registry_mirror.status_expression(now or timezone.now()), "last_heartbeat_at"))
    for name, current, at in rows:
        up.add((name,), int(current == contract.ONLINE))
        status.add((name, current), 1)
        if at is not None:
            heartbeat.add((name,), at.timestamp())
    return up, status, heartbeat


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


class RedisCollector:
    """What the controller and the lock holders counted in Redis of what anyone wrote there without the secret."""

    def collect(self):
        try:
            r = supervisor_redis()
            summary = registry_mirror.rejected_summary(r)
            forged = locks.forgeries(r)
            refused = {kind.decode(errors="replace"): count for kind, count in r.hgetall(contract.REFUSED_KEY).items()}
        except redis.RedisError:
            return  # appsup_controller_redis_up says so
        if summary is not None:
            yield GaugeMetricFamily("appsup_registrations_rejected", "Registrations in Redis that do not verify "
                                    "(not signed with a key enrolled for their environment, or malformed), as the "
                                    "controller last counted "
                                    "them; the Environments page lists the last few.", value=summary["count"])
        family = CounterMetricFamily("appsup_forged_locks_broken", "Holder values of the controller lease and of "
                                     "the application and provision locks that did not verify, broken so that the "
                                     "real holders proceed.", labels=["lock"])
        for kind in contract.FORGED_LOCK_KINDS:
            family.add_metric([kind], forged.get(kind, 0))
        yield family
        family = CounterMetricFamily("appsup_refused_signatures", "Entries refused for not being signed by whom they "
                                     "must be: commands a worker refused (not the supervisor's), registrations and "
                                     "statuses not signed by their environment (each stored value once), configuration entries that differed from the database "
                                     "(rewritten).", labels=["kind"])
        for kind in contract.REFUSED_KINDS:
            count = refused.get(kind, b"0")
            family.add_metric([kind], int(count) if count.isdigit() else 0)
        yield family


class LoadCollector:
    """The applications' requests in flight, waiting and refused on the worker web processes, as they last
    reported them to Redis (exchange.load)."""

    def collect(self):
        environments = Environment.objects.order_by().values_list("name", flat=True)
        try:
            found = load_report.read(supervisor_redis(), environments)
        except redis.RedisError:
            return  # appsup_controller_redis_up says so
        totals = {}
        for apps in found.values():
            for name, counters in apps.items():
                sums = totals.setdefault(name, dict.fromkeys(load_report.COUNTERS, 0))
                for counter in load_report.COUNTERS:
                    sums[counter] += counters[counter]
        known = set(Application.objects.filter(name__in=list(totals)).values_list("name", flat=True))
        in_flight = GaugeMetricFamily("appsup_app_requests_in_flight", "Requests of the application running on the "
                                      "worker web processes (a request answered 504 counts until it ends).",
                                      labels=["app"])
        queued = GaugeMetricFamily("appsup_app_requests_queued", "Requests of the application waiting for a turn "
                                   "on the worker web processes.", labels=["app"])
        refused = CounterMetricFamily("appsup_app_requests_refused", "Requests of the application answered 503 "
                                      "(busy) by the worker web processes since they started.", labels=["app"])
        for name in sorted(known):
            in_flight.add_metric([name], totals[name]["in_flight"])
            queued.add_metric([name], totals[name]["queued"])
            refused.add_metric([name], totals[name]["refused"])
        yield from (in_flight, queued, refused)


class AppRequestsCollector:
    """Each application's hosted requests, as every worker web process counted them in Redis (exchange.applog):
    by status class, their durations, and those that raised. Only applications and environments that exist in the
    database (whatever names Redis holds), so the series are bounded: per application and environment it ran on,
    5 status classes, 12 buckets with their sum and count, and 1 error count."""

    def collect(self):
        names = list(Application.objects.order_by("name").values_list("name", flat=True))
        try:
            found = applog.counters(supervisor_redis(), names)
        except redis.RedisError:
            return  # appsup_controller_redis_up says so
        environments = set(Environment.objects.filter(
            name__in={e for per in found.values() for e in per}).values_list("name", flat=True))
        requests = CounterMetricFamily("appsup_app_requests", "Requests of the application answered by the worker "
                                       "web processes (hosted requests), by environment and status class.",
                                       labels=["app", "environment", "code"])
        durations = HistogramMetricFamily("appsup_app_request_duration_seconds", "How long the application's "
                                          "hosted requests took on the worker web processes, by environment.",
                                          labels=["app", "environment"])
        errors = CounterMetricFamily("appsup_app_errors", "Requests of the application whose view raised (answered "
                                     "500, the traceback on its Logs page), by environment.",
                                     labels=["app", "environment"])
        for name in names:
            for environment, counts in sorted(found.get(name, {}).items()):
                if environment not in environments:
                    continue
                for code, n in sorted(counts["codes"].items()):
                    requests.add_metric([name, environment, code], n)
                durations.add_metric([name, environment], list(counts["buckets"].items()), sum_value=counts["sum"])
                errors.add_metric([name, environment], counts["errors"])
        yield from (requests, durations, errors)


registry.register(StateCollector())
registry.register(LoadCollector())
registry.register(AppRequestsCollector())
registry.register(RedisCollector())
registry.register(CommandDurationCollector())
