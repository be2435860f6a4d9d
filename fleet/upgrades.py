"""Fleet upgrades (docs/architecture.md, "Fleet upgrades"): migrate the applications whose environments report
pending migrations, in the background.

``create`` records an Upgrade with one UpgradeStep per (application, environment) that reports migrations to
apply; nothing is sent then (an API call answers 202 at once). ``advance`` is the controller's bounded step (and
``manage.py upgradeapps`` runs it too while it waits): it reads the answers of the steps in hand without waiting,
then sends the next ones, at most APP_UPGRADE_CONCURRENCY at a time per environment, environments side by side. A
step is claimed by a conditional UPDATE, so two processes advancing the same upgrade never send a step twice.

Each step: the pre-upgrade backup (``backup_before_upgrade``: a safety backup taken on that environment through
apps.backups, unless APP_UPGRADE_BACKUP=false; each environment's steps are sent by a thread of their own, so
backups run side by side across environments), then the worker's ``upgrade`` command (workers.upgrade). A failing
migration leaves that application stopped there with the error (and the backup's id), made desired stopped so that
the controller does not start it again behind the operator; the other steps go on. While a step is in hand
(``in_hand``) the controller leaves its application alone. Every change is published as ``{"type": "upgrade",
"id"}`` (and an ``app`` event), so the admin and ``/ws/events/`` show progress as it happens.
"""

import datetime
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import redis as redis_lib
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Q
from django.utils import timezone
from rq.results import Result

from apps import backups, lifecycle
from apps.forms import publish_quietly
from apps.models import Application, Backup
from environments.models import Environment
from exchange import channel, contract, events
from exchange.redis_client import command_redis, supervisor_redis

from . import pending
from .models import (
    ACTIVE_STEP_STATES,
    BACKING_UP,
    DONE,
    FAILED,
    MIGRATING,
    RUNNING,
    WAITING,
    Upgrade,
    UpgradeStep,
)

log = logging.getLogger("appsup.fleet")

# How long a worker may take to pick an upgrade up (it runs one command at a time), and then to run it.
PICKUP_SECONDS = 600
RUN_SECONDS = channel.JOB_TIMEOUT
# A step claimed for its backup this long ago whose sender never sent it (killed meanwhile) is failed, so that its
# upgrade ends.
CUT_OFF_SECONDS = 3600


class UnknownApps(ValueError):
    def __init__(self, names):
        self.names = names
        super().__init__(f"no application named {', '.join(repr(n) for n in names)}")


def backup_before_upgrade(application, environment):
    """The id (as text) of a backup of APPLICATION's database on ENVIRONMENT (a name) taken just now, before it is
    migrated there; None with APP_UPGRADE_BACKUP=false. Kept as a safety backup (never pruned by the schedule's
    retention). Raises what apps.backups.take raises: the step then fails, not migrated without one."""
    if not settings.APP_UPGRADE_BACKUP:
        return None
    return str(backups.take(application, kind=Backup.SAFETY, environment=environment).pk)


def create(apps=None, asked_by="", automatic=False):
    """Record an upgrade of APPS (names; None: every application that reports pending migrations). Raises
    UnknownApps for names that are no application. Returns the Upgrade (done at once when nothing is pending)."""
    if apps is not None:
        apps = sorted(set(apps))
        known = set(Application.objects.filter(name__in=apps).values_list("name", flat=True))
        unknown = [name for name in apps if name not in known]
        if unknown:
            raise UnknownApps(unknown)
    targets = pending.needing_upgrade(apps)
    upgrade = Upgrade.objects.create(asked_by=asked_by[:150], apps=apps or [], automatic=automatic)
    UpgradeStep.objects.bulk_create(
        UpgradeStep(upgrade=upgrade, app=app, environment=environment, migrations=migrations, version=version)
        for app, environment, migrations, version in targets)
    if not targets:
        Upgrade.objects.filter(pk=upgrade.pk).update(state=DONE, finished_at=timezone.now())
        upgrade.refresh_from_db()
    _announce(upgrade.pk)
    log.info("upgrade %s asked%s: %d application placements to migrate", upgrade.pk,
             f" by {asked_by}" if asked_by else "", len(targets))
    return upgrade


def in_hand():
    """The names of the applications an upgrade step is backing up or migrating (a queryset, for a subquery)."""
    return UpgradeStep.objects.filter(state__in=(BACKING_UP, MIGRATING)).values("app")


def auto_upgrade():
    """With APP_AUTO_UPGRADE: an upgrade of every running placement reporting pending migrations for a version not
    upgraded (nor tried) yet: a worker started with new code is migrated once, a failure is not retried in a loop.
    Returns the Upgrade, or None."""
    if not settings.APP_AUTO_UPGRADE:
        return None
    from apps.models import Placement

    candidates = pending.needing_upgrade()
    if not candidates:
        return None
    names = {app for app, *_ in candidates}
    running = set(Placement.objects.filter(application__name__in=names, state=contract.RUNNING,
                                           application__desired_state=contract.RUNNING)
                  .values_list("application__name", "environment__name"))
    steps = UpgradeStep.objects.filter(app__in=names)
    tried = set(steps.values_list("app", "environment", "version"))
    active = set(steps.filter(state__in=ACTIVE_STEP_STATES).values_list("app", "environment"))
    apps = sorted({app for app, environment, _, version in candidates
                   if (app, environment) in running and (app, environment, version) not in tried
                   and (app, environment) not in active})
    if not apps:
        return None
    return create(apps, asked_by="APP_AUTO_UPGRADE", automatic=True)


def advance(now=None, per_environment=None):
    """One bounded step over every running upgrade: read the answers in hand, send the next steps. Returns whether
    anything changed."""
    per_environment = per_environment or settings.APP_UPGRADE_CONCURRENCY
    now = now or time.time()
    changed = set()
    cut_off = timezone.now() - datetime.timedelta(seconds=CUT_OFF_SECONDS)
    for step in UpgradeStep.objects.filter(state=BACKING_UP, started_at__lt=cut_off):
        if _fail(step, "cut off: the process sending it stopped while it was taking its backup; not migrated"):
            changed.add(step.upgrade_id)
    for step in UpgradeStep.objects.filter(state=MIGRATING, upgrade__state=RUNNING):
        if _poll(step, now):
            changed.add(step.upgrade_id)
    busy = dict(UpgradeStep.objects.filter(state__in=(BACKING_UP, MIGRATING)).values_list("environment")
                .annotate(n=Count("id")).values_list("environment", "n"))
    waiting = UpgradeStep.objects.filter(state=WAITING, upgrade__state=RUNNING).order_by("upgrade_id", "id")
    environments = {}
    for step in waiting.only("id", "environment"):
        if busy.get(step.environment, 0) + len(environments.get(step.environment, [])) < per_environment:
            environments.setdefault(step.environment, []).append(step.id)
    batches = list(environments.values())
    if settings.APP_UPGRADE_BACKUP and len(batches) > 1:
        # Each step's backup is a dump through its environment's agent: environments side by side, as promised.
        with ThreadPoolExecutor(max_workers=len(batches), thread_name_prefix="upgrade-send") as pool:
            for sent in pool.map(lambda ids: _send_batch(ids, now, close=True), batches):
                changed |= sent
    else:
        for ids in batches:
            changed |= _send_batch(ids, now)
    changed |= _finish_upgrades()
    for upgrade_id in sorted(changed):
        _announce(upgrade_id)
    return bool(changed)


def _send_batch(ids, now, close=False):
    """Send the steps IDS (one environment's), one after the other; the ids of the upgrades that changed."""
    try:
        return {step.upgrade_id for step in UpgradeStep.objects.filter(pk__in=ids).order_by("id") if _send(step, now)}
    finally:
        if close:  # a pool thread's own connections
            connections.close_all()


def _send(step, now):
    """Claim STEP, take its backup, send its upgrade command. Returns whether it claimed it."""
    if UpgradeStep.objects.filter(pk=step.pk, state=WAITING).update(
            state=BACKING_UP, started_at=timezone.now()) != 1:
        return False
    application = Application.objects.filter(name=step.app).first()
    environment = Environment.objects.filter(name=step.environment).first()
    if application is None or not application.placements.filter(environment__name=step.environment).exists():
        return _fail(step, f"{step.app} is no longer placed on {step.environment}")
    if environment is None or not environment.is_online():
        reason = environment.offline_reason() if environment is not None else f"no environment {step.environment}"
        return _fail(step, f"not migrated: {reason}")
    try:
        backup = backup_before_upgrade(application, step.environment) or ""
    except lifecycle.OperationInProgress:
        # An operator's command (or a move) holds it: this step waits for the next pass.
        UpgradeStep.objects.filter(pk=step.pk).update(state=WAITING, started_at=None)
        return False
    except Exception as exc:
        return _fail(step, f"the backup before the upgrade failed, so it was not migrated: {exc}")
    try:
        job_id = channel.enqueue(step.environment, contract.UPGRADE, step.app, {"backup": backup},
                                 expires_at=now + PICKUP_SECONDS, generation=application.generation)
    except redis_lib.RedisError as exc:
        UpgradeStep.objects.filter(pk=step.pk).update(state=WAITING, started_at=None)
        log.warning("upgrade %s: %s on %s not sent, Redis unavailable (%s)", step.upgrade_id, step.app,
                    step.environment, exc)
        return False
    UpgradeStep.objects.filter(pk=step.pk).update(state=MIGRATING, backup=backup, job_id=job_id,
                                                  deadline=now + PICKUP_SECONDS + RUN_SECONDS)
    log.info("upgrade %s: migrating %s on %s", step.upgrade_id, step.app, step.environment)
    return True


def _poll(step, now):
    """Finish STEP if its answer is in (or it can no longer come). Returns whether it finished."""
    conn = command_redis()
    expected = channel.binding(step.job_id, step.app, step.environment, contract.UPGRADE)
    for answer_id, fields in conn.xrange(Result.get_key(step.job_id)):
        answer, why = lifecycle._answer(step.job_id, answer_id, fields, conn, expected, step.environment)
        if why is not None:
            log.warning("upgrade %s: refused an answer to %s: %s", step.upgrade_id, step.job_id, why)
            continue
        if isinstance(answer, lifecycle.Failure):
            return _fail(step, answer.message, stop=False)
        if answer.get("state") == contract.MIGRATED:
            return _done(step, answer.get("applied") or [])
        return _fail(step, answer.get("error") or f"the upgrade ended {answer.get('state')}",
                     stop=answer.get("state") == contract.ERROR and "upgrade failed" in (answer.get("error") or ""))
    if step.deadline is not None and now > step.deadline:
        return _fail(step, f"no answer from environment {step.environment} in time", stop=False)
    return False


def _done(step, applied):
    if UpgradeStep.objects.filter(pk=step.pk, state=MIGRATING).update(
            state=DONE, applied=applied, finished_at=timezone.now()) != 1:
        return False
    log.info("upgrade %s: %s on %s migrated (%d applied)", step.upgrade_id, step.app, step.environment, len(applied))
    return True


def _fail(step, message, stop=False):
    if step.backup and f"backup {step.backup}" not in message:
        message = f"{message} (the backup taken before it: backup {step.backup})"
    stopped = []
    # One transaction: the controller leaves the application alone while the step is in hand (in_hand), so it must
    # see it desired stopped the moment the step is no longer.
    with transaction.atomic():
        if UpgradeStep.objects.filter(pk=step.pk, state__in=ACTIVE_STEP_STATES).update(
                state=FAILED, error=message, finished_at=timezone.now()) != 1:
            return False
        if stop:
            # The worker stopped it there; desired stopped keeps the controller from starting it again behind the
            # operator (a start would migrate, and fail, again and again).
            updated = Application.objects.filter(name=step.app).exclude(desired_state=contract.STOPPED)
            stopped = list(updated.values_list("pk", flat=True))
            Application.objects.filter(pk__in=stopped).update(
                desired_state=contract.STOPPED, last_error=f"upgrade failed on {step.environment}: {message}",
                last_error_at=timezone.now())
    log.warning("upgrade %s: %s on %s failed: %s", step.upgrade_id, step.app, step.environment, message)
    for pk in stopped:
        publish_quietly(pk)
    return True


def _finish_upgrades():
    finished = set()
    open_ = Upgrade.objects.filter(state=RUNNING).annotate(
        active=Count("steps", filter=Q(steps__state__in=ACTIVE_STEP_STATES)),
        failed=Count("steps", filter=Q(steps__state=FAILED)))
    for upgrade in open_:
        if upgrade.active:
            continue
        state = FAILED if upgrade.failed else DONE
        if Upgrade.objects.filter(pk=upgrade.pk, state=RUNNING).update(state=state, finished_at=timezone.now()):
            log.info("upgrade %s %s", upgrade.pk, state)
            finished.add(upgrade.pk)
    return finished


def _announce(upgrade_id):
    try:
        r = supervisor_redis()
        events.publish(r, events.UPGRADE, id=upgrade_id)
        for app in UpgradeStep.objects.filter(upgrade_id=upgrade_id).values_list("app", flat=True).distinct():
            events.publish(r, events.APP, name=app)
    except redis_lib.RedisError as exc:  # events only wake pages early
        log.debug("upgrade %s: not announced (%s)", upgrade_id, exc)


def step_dict(step):
    return {"app": step.app, "environment": step.environment, "state": step.state, "migrations": step.migrations,
            "applied": step.applied, "backup": step.backup or None, "error": step.error or None,
            "started_at": _iso(step.started_at), "finished_at": _iso(step.finished_at)}


def upgrade_dict(upgrade):
    steps = list(upgrade.steps.all())
    counts = {state: sum(1 for s in steps if s.state == state) for state in (DONE, FAILED)}
    return {"id": upgrade.pk, "state": upgrade.state, "apps": upgrade.apps or None, "automatic": upgrade.automatic,
            "asked_by": upgrade.asked_by or None, "created_at": _iso(upgrade.created_at),
            "finished_at": _iso(upgrade.finished_at), "total": len(steps), "done": counts[DONE],
            "failed": counts[FAILED], "steps": [step_dict(s) for s in steps]}


def _iso(moment):
    return moment.isoformat() if moment is not None else None
