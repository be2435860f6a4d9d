"""Transitions worth an alert, found level-triggered: each controller pass compares what the database mirrors now
with the last status alerted per subject (AlertState), so nothing depends on what one controller process remembers.

A transition is claimed by a conditional UPDATE of the subject's AlertState (``filter(status=old).update(status=new)``
changing one row means this controller owns it); the alert and its deliveries are written in the same transaction.
Two controllers that see the same transition, or a controller restarted after it, raise one alert between them.

- Environments: online, degraded, offline; each change is an alert. The first time an environment is seen its status
  is recorded without an alert (a first deploy, or the alerts' own first run, would otherwise send a storm of
  "online").
- Flapping: an environment whose status changed APP_ALERT_FLAP_COUNT times within APP_ALERT_FLAP_WINDOW seconds
  (counting the change at hand) gets one ``environment.flapping`` alert instead; its further changes are recorded as
  held alerts (listed in the admin, never sent) until it has kept one status for a whole window, when one alert says
  it is steady again and what its status is. Starting and ending are claimed on the AlertState as transitions are.
- Placements: one ``placement.error`` per transition into ``error``. It stays alerted while the application stays in
  error, through retries (``starting`` again is not a recovery); once it is running or stopped (or gone), a new error
  alerts again.
"""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.models import Placement
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange.contract import DEGRADED, ERROR, OFFLINE, ONLINE, RUNNING, STOPPED

from .delivery import enqueue
from .models import (
    BACKUP_FAILED,
    ENVIRONMENT_EVENTS,
    ENVIRONMENT_FLAPPING,
    IN_ERROR,
    PLACEMENT_ERROR,
    RECOVERED,
    Alert,
    AlertState,
)


def raise_alerts(now, heartbeats_reset_at=None, statuses=None):
    """Record an alert (with its deliveries) for each transition since the last look. Returns the alerts raised.

    HEARTBEATS_RESET_AT: when the controller last regained Redis, or found it had lost its data; see
    ``_heartbeat_may_be_missing``. STATUSES: every environment's status as of NOW ({name: status}), when the caller
    has just read them (the controller's mirror, in the same pass)."""
    return environment_alerts(now, heartbeats_reset_at, statuses) + placement_alerts(now)


def environment_alerts(now, heartbeats_reset_at=None, statuses=None):
    # Statuses as plain values in one query; only the environments whose status moved are read as model instances
    # (for their message): reading all 10,000 as instances each pass took 200 ms.
    if statuses is None:
        statuses = registry_mirror.statuses(now)
    alerted, flapping = {}, set()
    for name, status, flapping_since in AlertState.objects.filter(app="").values_list("environment", "status",
                                                                                         "flapping_since"):
        alerted[name] = status
        if flapping_since is not None:
            flapping.add(name)
    first_seen = [AlertState(environment=name, status=status, changed_at=now) for name, status in statuses.items()
                  if name not in alerted]
    moved = [name for name, status in statuses.items() if name in alerted and alerted[name] != status]
    raised = []
    for environment in Environment.objects.filter(name__in=moved).order_by("name"):
        status, last = environment.status(now), alerted[environment.name]
        if (last == status or _heartbeat_may_be_missing(environment, status, now, heartbeats_reset_at)
                or _stopped_for_a_restart(environment, status, now) or _not_lasted_yet(environment, status, now)):
            continue
        alert = Alert(event=ENVIRONMENT_EVENTS[status], environment=environment.name, status=status,
                      message=_environment_message(environment, last, status, now), at=now)
        starts_flapping = False
        if environment.name in flapping:
            alert.held = True
        elif _starts_flapping(environment.name, now):
            starts_flapping = True
            alert.event = ENVIRONMENT_FLAPPING
            alert.message = (f"environment {environment.name} is flapping: {settings.APP_ALERT_FLAP_COUNT} status "
                             f"changes within {settings.APP_ALERT_FLAP_WINDOW:g} s, now {status} "
                             f"({alert.message}); its further changes are held until it keeps one status for "
                             f"{settings.APP_ALERT_FLAP_WINDOW:g} s")
        if transition(environment.name, "", last, status, now, alert, starts_flapping=starts_flapping):
            raised.append(alert)
    AlertState.objects.bulk_create(first_seen, ignore_conflicts=True)  # another controller's first look is as good
    if flapping:  # read with the statuses above: no query in a pass where nothing flaps
        raised += steady_after_flapping(now)
    return raised


def _starts_flapping(name, now):
    """Whether the change of environment NAME at hand makes APP_ALERT_FLAP_COUNT changes within the window."""
    count = settings.APP_ALERT_FLAP_COUNT
    if count <= 0:
        return False
    since = now - timedelta(seconds=settings.APP_ALERT_FLAP_WINDOW)
    earlier = Alert.objects.filter(environment=name, app="", at__gt=since,
                                   event__in=[*ENVIRONMENT_EVENTS.values(), ENVIRONMENT_FLAPPING]).count()
    return earlier + 1 >= count


def steady_after_flapping(now):
    """One alert for each flapping environment that has kept its status for a whole window: its changes are sent
    again from then on. Claimed by a conditional UPDATE of its AlertState, so it is sent once."""
    quiet_since = now - timedelta(seconds=settings.APP_ALERT_FLAP_WINDOW)
    raised = []
    for state in AlertState.objects.filter(app="", flapping_since__isnull=False, changed_at__lte=quiet_since):
        alert = Alert(event=ENVIRONMENT_EVENTS.get(state.status, ENVIRONMENT_FLAPPING), environment=state.environment,
                      status=state.status, at=now,
                      message=f"environment {state.environment} is steady again: {state.status} for "
                              f"{settings.APP_ALERT_FLAP_WINDOW:g} s after flapping since "
                              f"{state.flapping_since.isoformat(timespec='seconds')}; its changes are sent again")
        with transaction.atomic():
            claimed = AlertState.objects.filter(pk=state.pk, flapping_since=state.flapping_since,
                                                changed_at=state.changed_at).update(flapping_since=None) == 1
            if claimed:
                alert.save()
                enqueue(alert, now)
                raised.append(alert)
    return raised


def placement_alerts(now):
    alerted = {(app, env) for env, app in AlertState.objects.exclude(app="").filter(status=IN_ERROR)
               .values_list("environment", "app")}
    failing = {
        (app, env): (error, at)
        for app, env, error, at in Placement.objects.filter(state=ERROR)
        .values_list("application__name", "environment__name", "error", "state_at")
    }
    raised = []
    for (app, env), (error, at) in sorted(failing.items()):
        if (app, env) in alerted:
            continue
        alert = Alert(event=PLACEMENT_ERROR, environment=env, app=app, status=ERROR,
                      message=placement_message(app, env, error), at=at or now)
        if transition(env, app, RECOVERED, IN_ERROR, now, alert, or_create=True):
            raised.append(alert)
    leaving = alerted - failing.keys()
    if leaving:
        states = {
            (app, env): state
            for app, env, state in Placement.objects.filter(application__name__in={app for app, _ in leaving})
            .values_list("application__name", "environment__name", "state")
        }
        for app, env in leaving:
            if states.get((app, env)) in (None, RUNNING, STOPPED):
                transition(env, app, IN_ERROR, RECOVERED, now)
    return raised


def backup_failed(application, environment, message, now):
    """A scheduled backup of APPLICATION failed (apps.backups): one alert, as its slot is claimed once."""
    with transaction.atomic():
        alert = Alert.objects.create(event=BACKUP_FAILED, environment=environment or "", app=application.name,
                                     status=ERROR, message=message, at=now)
        enqueue(alert, now)
    return alert


def transition(environment, app, old, new, now, alert=None, or_create=False, starts_flapping=False):
    """Move the subject's AlertState from OLD to NEW and, if this call moved it, save ALERT with one delivery per
    channel (none if it is held), in the same transaction. OR_CREATE: a subject with no AlertState yet counts as OLD.
    STARTS_FLAPPING: the subject is flapping from NOW. Returns whether this call moved it (False: another controller
    did, or the subject is not at OLD any more)."""
    with transaction.atomic():
        subject = AlertState.objects.filter(environment=environment, app=app)
        flap = {"flapping_since": now} if starts_flapping else {}
        moved = subject.filter(status=old).update(status=new, changed_at=now, **flap) == 1
        if not moved and or_create:
            try:
                with transaction.atomic():
                    AlertState.objects.create(environment=environment, app=app, status=new, changed_at=now)
                moved = True
            except IntegrityError:  # it exists: at NEW already, or another controller just created it
                pass
        if moved and alert is not None:
            alert.save()
            if not alert.held:
                enqueue(alert, now)
        return moved


def _heartbeat_may_be_missing(environment, status, now, reset_at):
    """Whether an offline found from a heartbeat's age may only mean that Redis lost it: within a heartbeat
    timeout of the controller regaining Redis (or finding it emptied), an agent may not have had the chance to
    heartbeat again. The alert waits until it has; a stop or a rejection is news at once."""
    if status != OFFLINE or reset_at is None or environment.rejected or environment.stopped_at is not None:
        return False
    return now - reset_at < timedelta(seconds=settings.APP_HEARTBEAT_TIMEOUT)


def _stopped_for_a_restart(environment, status, now):
    """Whether an offline environment's worker stopped on purpose (it deregistered: SIGTERM, Ctrl-C, a redeploy)
    within APP_ALERT_STOP_GRACE: a redeploy is back by then, and is no news. One that stays away is alerted then;
    one that is back was online all along as far as the alerts go, so neither offline nor online is sent."""
    grace = settings.APP_ALERT_STOP_GRACE
    if status != OFFLINE or environment.stopped_at is None or environment.rejected or grace <= 0:
        return False
    return now - environment.stopped_at < timedelta(seconds=grace)


def _not_lasted_yet(environment, status, now):
    """Whether an unplanned offline (no heartbeat) has lasted less than APP_ALERT_AFTER (Alertmanager's ``for:``):
    a blip that ends sooner raises nothing, and so its recovery raises nothing either (the alerted status never
    moved)."""
    after = settings.APP_ALERT_AFTER
    if status != OFFLINE or after <= 0 or environment.rejected or environment.stopped_at is not None:
        return False
    if environment.last_heartbeat_at is None:
        return False
    offline_since = environment.last_heartbeat_at + timedelta(seconds=settings.APP_HEARTBEAT_TIMEOUT)
    return now - offline_since < timedelta(seconds=after)


def placement_message(app, env, error):
    """The alert of APP failing on ENV. ERROR is ENV's own words (its signed status): quoted as reported by it, so that
    a compromised environment's text is never read as the supervisor's."""
    if not error:
        return f"{app} failed on {env}: no error message was reported"
    return f"{app} failed on {env}; reported by {env}: {error}"


def _environment_message(environment, last, status, now):
    if status == ONLINE:
        return f"environment {environment.name} is online (it was {last})"
    if status == DEGRADED and environment.problem:
        # The problem is the environment's own words (its signed registration).
        return f"environment {environment.name} is degraded; reported by {environment.name}: {environment.problem}"
    return environment.status_reason(now)
