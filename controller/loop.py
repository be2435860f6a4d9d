"""The supervisor's controller (``manage.py runsupervisor``): closes the gap between the desired state in the
database and what Redis and the workers report, continuously, the way a Kubernetes controller does.

Written as small steps that answer "was there work?" and that tests call directly with a clock:

- ``hold_lease``: several controllers may run; the one holding the Redis lease acts, the others wait;
- ``rebuild_cache_if_missing``: a configuration cache lost or partly lost (Redis restarted, flushed, failed over)
  is rebuilt from the database within a pass, without waiting for anyone to load a page;
- ``mirror``: registrations, heartbeats and reported states are copied into the database (pages only read them),
  and a change of an environment's status is published as an event;
- ``reconcile_one``: one application whose observed state differs from its desired state is brought to it, on the
  environments that are reachable, sequentially and under its lock. Level-triggered: each pass compares from
  scratch, so an operation cut off by a crash (a supervisor killed between env_a and env_b, an agent killed
  mid-start) is finished like any other drift. A failure moves the application's next attempt forward
  (exponential backoff, capped); an offline environment is waited for, not retried against;
- ``remove_one``: an environment an application has left (its environments were changed while it was offline, or
  the remove failed there) gets the remove command once it is online (apps.placements);
- ``raise_alerts``: a change of an environment's status, or an application failing on one, is recorded as an alert
  once per transition against a durable record in the database (alerts.transitions), whichever controller sees it;
- ``deliver_alerts``: a few due alert deliveries are sent (webhooks, e-mail), failures retried with backoff;
- ``prune_audit``: a batch of audit entries older than ``APP_AUDIT_DAYS`` is deleted (audit.models).

What the steps do is recorded in the audit log as this controller's (``Actor.controller``, its lease holder id):
the commands it sends, the moves and removals it performs, the alerts it sends, the cache it rebuilds.
- ``mirror_migrations`` and ``upgrade_step``: the pending migrations the agents report are mirrored (every
  MIGRATIONS_MIRROR_SECONDS), and the fleet upgrades under way advance one bounded step (fleet.upgrades; in a
  background thread of its own).
- ``backup_one``: one scheduled backup whose slot has come is claimed (a unique row per application and slot, so
  once per slot whichever controller acts) and taken; a failure is alerted (apps.backups). Every 10 minutes it first
  deletes the scratch directories of backups cut off an hour ago or more.

``run`` only loops: the fast steps every pass, ``reconcile_one``, ``deliver_alerts`` and ``backup_one`` each in a
background thread of its own, so that a long start or a slow webhook never delays the cache rebuild, the mirror or the alerts.
"""

import contextlib
import functools
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q

from alerts import delivery as alert_delivery
from alerts import transitions as alert_transitions
from apps import backups, cache, lifecycle, moves, placements
from apps import mirror as status_mirror
from apps.models import Application
from audit import actions
from audit import log as audit
from audit.models import Entry
from environments import drain, enrollment
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import contract, events
from exchange.redis_client import supervisor_redis
from fleet import pending as fleet_pending
from fleet import upgrades as fleet_upgrades

from .lease import Lease
from .models import ControllerState

log = logging.getLogger("appsup.controller")

PASS_SECONDS = 0.5
BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0
# How many drifting applications one reconcile pass looks at before giving up for this pass.
CANDIDATES_PER_PASS = 50
# How often the mirror compares every registration and reported state with the database, rather than only those
# whose bytes changed in Redis since the last pass (a safety net: the database changed behind the controller).
FULL_MIRROR_SECONDS = 300.0
# How often the controller compares the configuration cache with the database (the entries whose bytes changed).
CACHE_CHECK_SECONDS = 2.0
# How often the pending migrations the agents report are mirrored (the whole hash is read: they change only when a
# worker starts or runs a command, and nobody waits on them to the second).
MIGRATIONS_MIRROR_SECONDS = 2.0
# How often the scratch directories of backups cut off (a supervisor process killed mid-backup) are looked for.
SCRATCH_SWEEP_SECONDS = 600.0


def backoff(attempts, base=BACKOFF_BASE, cap=BACKOFF_CAP):
    """Seconds before attempt number ATTEMPTS + 1, after ATTEMPTS consecutive failures."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def plan(application, now):
    """(command, environment names to act on now, environment names waited for) for APPLICATION, from its
    placements as mirrored. A start goes in order and stops at the first unreachable environment, as an operator's
    sequential start would; a stop acts wherever it can. A restart asked for while an environment was offline
    (Placement.restart_pending) is work too, until carried out."""
    desired = application.desired_state
    act, waiting = [], []
    for placement in application.ordered_placements():
        if placement.state == desired and not (desired == contract.RUNNING and placement.restart_pending):
            continue
        if not placement.environment.is_online(now):
            waiting.append(placement.environment.name)
            if desired == contract.RUNNING:
                break
            continue
        act.append(placement.environment.name)
    command = contract.START if desired == contract.RUNNING else contract.STOP
    return command, act, waiting


class Outbox:
    """Events (exchange.events.publish) collected during a pass and sent as one command: after 10,000 heartbeats a
    pipeline of 10,000 PUBLISH commands cost the client 60 ms, one script publishing them all costs 15."""

    # Published in order, on the channels given, as PUBLISH would; answers how many were sent.
    SCRIPT = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2"

    def __init__(self):
        self.messages = []

    def publish(self, channel, message):
        self.messages += [channel, message]
        return 0

    def send(self, redis_client):
        if self.messages:
            redis_client.eval(self.SCRIPT, 0, *self.messages)
            self.messages = []


class Background:
    """WORK run in a thread of its own, one run at a time: started again by ``kick`` once the last run is over."""

    def __init__(self, name, work):
        self.name = name
        self.work = work
        self._executor = None
        self._pending = None

    def kick(self):
        if self._pending is not None and not self._pending.done():
            return
        if self._pending is not None and self._pending.exception() is not None:
            log.error("%s failed: %r", self.name, self._pending.exception())
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._pending = self._executor.submit(self.work)

    def shutdown(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def acting(step):
    """What STEP records in the audit log is this controller's."""

    @functools.wraps(step)
    def as_controller(self, *args, **kwargs):
        with audit.acting_as(audit.Actor.controller(self.lease.holder)):
            return step(self, *args, **kwargs)

    return as_controller


class Controller:
    def __init__(self, clock=time.time, sleep=time.sleep, holder=None, timeout=None):
        self.clock = clock
        self.sleep = sleep
        self.timeout = timeout  # of each converge operation; default settings.APP_COMMAND_TIMEOUT
        self.lease = Lease(supervisor_redis(), holder=holder)
        self.environment_statuses = None  # name -> status, as of the last mirror
        self.mirrored = None  # (when, environment_statuses) of the last mirror
        # When Redis last came back, or was found emptied: heartbeats may be missing from it for a while.
        self.heartbeats_reset_at = None
        self._redis_lost = False
        self._seen_at = None  # when the mirror last started from scratch (time.monotonic)
        self.published_keys = None  # the environment keys last published (environments.enrollment)
        self.verified_cache = cache.Verified()
        self.cache_checked_at = None  # when repair_cache last ran (time.monotonic)
        self.forget_mirrored()
        self.stop_requested = False
        self._reconciler = Background("reconcile", self._reconcile_all)
        self._deliverer = Background("alerts", self._deliver_all)
        self._upgrader = Background("upgrades", self._upgrade_all)
        self._migrations_mirrored_at = None  # time.monotonic() of the last mirror of pending migrations
        self._backer = Background("backups", self._backup_all)
        self._scratch_swept_at = None  # self.clock() of the last sweep of backups' scratch directories

    def now(self):
        return datetime.fromtimestamp(self.clock(), tz=dt_timezone.utc)

    # -- steps -----------------------------------------------------------------------------------------------

    def hold_lease(self):
        held_before = self.lease.held
        held = self.lease.hold()
        if held and not held_before:
            log.info("controller %s holds the lease and acts", self.lease.holder)
        elif held_before and not held:
            log.warning("controller %s lost the lease; standing by", self.lease.holder)
        return held

    @acting
    def rebuild_cache_if_missing(self):
        if cache.ensure(supervisor_redis()):
            log.warning("the configuration cache was missing or incomplete in Redis; rebuilt it from the database")
            audit.record(None, actions.CACHE_REBUILD, "cache:configuration")
            self.heartbeats_reset_at = self.now()
            self._seen_at = None
            return True
        return False

    def publish_keys(self):
        """Publish the environments' enrolled public keys to Redis when the database's changed or Redis lost them.
        Returns whether it published."""
        before = self.published_keys
        self.published_keys = enrollment.ensure_published(supervisor_redis(), before)
        return self.published_keys != before and before is not None

    def repair_cache(self, force=False):
        """Every CACHE_CHECK_SECONDS: rewrite configuration entries that differ from the database (forged with some
        key, altered, or old ones copied back). Returns the names repaired."""
        if not force and self.cache_checked_at is not None \
                and time.monotonic() - self.cache_checked_at < CACHE_CHECK_SECONDS:
            return []
        self.cache_checked_at = time.monotonic()
        repaired = cache.repair(supervisor_redis(), self.verified_cache)
        if repaired:
            log.warning("configuration entries in Redis differed from the database (forged or altered) and were "
                        "rewritten: %s", ", ".join(sorted(repaired)[:20]))
            supervisor_redis().hincrby(contract.REFUSED_KEY, contract.REFUSED_CONFIG, len(repaired))
        return repaired

    def mirror(self):
        """Copy registrations and reported states into the database; publish what changed in it (environments'
        status and heartbeats, applications' mirrored states), so that pages re-read it once it is there.
        Returns whether anything changed.

        What was mirrored is remembered between passes (environments.mirror.Seen, apps.mirror.Seen), so a pass
        costs what changed since the last one, not the number of environments and placements; it is forgotten
        every FULL_MIRROR_SECONDS and whenever Redis was lost, so a pass then compares everything again."""
        r = supervisor_redis()
        if self._seen_at is None or time.monotonic() - self._seen_at > FULL_MIRROR_SECONDS:
            self.forget_mirrored()
            self._seen_at = time.monotonic()
        created, changed = registry_mirror.sync(r, self._seen_registrations)
        apps = status_mirror.refresh_all(r, self._seen_statuses)
        now = self.now()
        statuses = registry_mirror.statuses(now)
        self.mirrored = (now, statuses)
        flipped, published = [], []
        if self.environment_statuses is not None:
            flipped = [name for name, status in statuses.items() if self.environment_statuses.get(name) != status]
            # A heartbeat is a row the mirror changed; a flip may also come from time passing.
            published = sorted(set(flipped).union(n for n in self._seen_registrations.updated if n in statuses))
        # Only an environment that is not online has a reason to give: read those few as model instances.
        troubled = [name for name in published if statuses[name] != contract.ONLINE]
        reasons = {env.name: env.status_reason(now) for env in Environment.objects.filter(name__in=troubled)}
        for name in flipped:
            log.info("%s", reasons.get(name) or f"environment {name} is {statuses[name]}")
        events_out = Outbox()
        beat_only = self._seen_registrations.beat_only.difference(flipped)
        for name in published:
            channel = contract.HEARTBEATS_CHANNEL if name in beat_only else contract.EVENTS_CHANNEL
            events.publish(events_out, events.ENVIRONMENT, channel=channel, name=name, status=statuses[name],
                           problem=reasons.get(name) or None)
        for app in apps:
            events.publish(events_out, events.APP, name=app)
        events_out.send(r)
        self.environment_statuses = statuses
        return bool(created or changed or apps or flipped)

    def forget_mirrored(self):
        """Compare everything again at the next mirror (Redis was lost or emptied, or it is time to)."""
        if getattr(self, "_seen_statuses", None) is not None:
            with contextlib.suppress(redis.RedisError, OSError):  # its connection may be what was lost
                self._seen_statuses.close()
        self._seen_registrations = registry_mirror.Seen()
        self._seen_statuses = status_mirror.Seen()

    def raise_alerts(self, mirrored=None):
        """Record an alert for each environment or placement transition not alerted yet. Returns whether it
        raised any. MIRRORED: (when, every environment's status then), as the mirror of this same pass read them,
        rather than reading them again."""
        now, statuses = mirrored if mirrored is not None else (self.now(), None)
        raised = alert_transitions.raise_alerts(now, self.heartbeats_reset_at, statuses)
        for alert in raised:
            log.info("alert %s: %s", alert.event, alert.message)
        return bool(raised)

    @acting
    def deliver_alerts(self):
        """Attempt a few due alert deliveries. Returns whether there were any."""
        return bool(alert_delivery.deliver_due(self.now))

    def backup_one(self):
        """Take one scheduled backup whose slot has come, if this controller claims it first. Returns whether there
        was one."""
        now = self.clock()
        if self._scratch_swept_at is None or now - self._scratch_swept_at >= SCRATCH_SWEEP_SECONDS:
            self._scratch_swept_at = now
            backups.sweep_scratch(now)
        return backups.run_due(self.now(), holder=self.lease.holder, timeout=self.timeout,
                               alert=alert_transitions.backup_failed)

    def candidates(self, now):
        """Applications with a placement whose mirrored state is not the desired one, whose next attempt is due."""
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        return (
            Application.objects.drifting()
            .filter(due)
            # An application being migrated is the upgrade's: a failed migration stops it there a moment before the
            # upgrade reads the answer and makes it desired stopped; a start in between would migrate it again.
            .exclude(name__in=fleet_upgrades.in_hand())
            .with_placements()
            .order_by("next_attempt_at", "name")[:CANDIDATES_PER_PASS]
        )

    @acting
    def reconcile_one(self):
        """Act on one drifting application. Returns True if a command was sent."""
        now = self.now()
        for application in self.candidates(now):
            command, act, waiting = plan(application, now)
            self._note_waiting(application, waiting)
            if not act:
                continue
            try:
                outcome = lifecycle.converge(application, act, timeout=self.timeout)
            except lifecycle.OperationInProgress:
                continue  # an operator's command (or another controller's) is on it
            if outcome is None:
                continue  # the desired state changed under us; the next pass sees the new one
            failure = outcome.failure
            audit.record(None, actions.API_COMMANDS[command], f"{actions.APPLICATION}:{application.name}",
                         {"environments": act, "waiting_for": waiting, "desired_state": application.desired_state},
                         actions.OK if failure is None else actions.FAILED,
                         detail="" if failure is None else f"{failure.environment}: {failure.error or failure.state}")
            self._record(application, outcome)
            return True
        return False

    @acting
    def remove_one(self):
        """Send one remove left waiting by a change of an application's environments (apps.placements): its
        environment was offline, or the remove failed there. Returns True if a command was sent."""
        return placements.remove_one(self.now(), timeout=self.timeout)

    @acting
    def prune_audit(self):
        """Delete a batch of audit entries older than APP_AUDIT_DAYS; whether there were any."""
        try:
            deleted = Entry.objects.prune(self.now(), settings.APP_AUDIT_DAYS)
        except DatabaseError as exc:  # tried again next pass; the controller's other work goes on
            log.error("could not prune the audit log: %s", exc)
            return False
        if deleted:
            audit.record(None, actions.AUDIT_PRUNE, "audit:log",
                         {"deleted": deleted, "older_than_days": settings.APP_AUDIT_DAYS})
        return bool(deleted)

    def _note_waiting(self, application, waiting):
        text = ", ".join(f"{name} (offline)" for name in waiting)
        if text != application.waiting_for:
            Application.objects.filter(pk=application.pk).update(waiting_for=text)
            application.waiting_for = text

    def _record(self, application, outcome):
        failure = outcome.failure
        if failure is None or failure.kind == lifecycle.OFFLINE:
            # Done, or stopped by an environment going offline: wait for it, without counting a failure.
            Application.objects.filter(pk=application.pk).update(attempts=0, next_attempt_at=None)
            return
        attempts = application.attempts + 1
        delay = backoff(attempts)
        message = f"{outcome.command} failed on {failure.environment}: {failure.error or failure.state}"
        log.warning("%s: %s; attempt %d failed, next in %.0f s", application.name, message, attempts, delay)
        Application.objects.filter(pk=application.pk).update(
            attempts=attempts,
            next_attempt_at=self.now() + timedelta(seconds=delay),
            last_error=message,
            last_error_at=self.now(),
        )

    def mirror_migrations(self):
        """Mirror the pending migrations the agents report (fleet.pending), publishing an ``app`` event for each
        application whose list changed. Returns those applications."""
        r = supervisor_redis()
        self._migrations_mirrored_at = time.monotonic()
        changed = fleet_pending.mirror(r)
        if changed:
            events_out = Outbox()
            for app in sorted(changed):
                events.publish(events_out, events.APP, name=app)
            events_out.send(r)
        return changed

    def upgrade_step(self):
        """Mirror the pending migrations when due (every MIGRATIONS_MIRROR_SECONDS), start an automatic upgrade when
        APP_AUTO_UPGRADE asks for one, and advance the fleet upgrades under way by one bounded step. Returns whether
        anything changed."""
        changed = set()
        if self._migrations_mirrored_at is None or \
                time.monotonic() - self._migrations_mirrored_at >= MIGRATIONS_MIRROR_SECONDS:
            changed = self.mirror_migrations()
        created = fleet_upgrades.auto_upgrade()
        return bool(fleet_upgrades.advance(self.clock()) or changed or created)

    def record_health(self, error=None):
        """What pages show about the controller and Redis (they never ask Redis themselves)."""
        state = ControllerState.current()
        now = self.now()
        state.holder = self.lease.holder if self.lease.held else state.holder
        state.seen_at = now
        if error is None:
            state.redis_error, state.redis_error_since = "", None
        else:
            state.redis_error = str(error) or type(error).__name__
            state.redis_error_since = state.redis_error_since or now
        state.save()

    # -- loop ------------------------------------------------------------------------------------------------

    def run_pass(self, inline=True):
        """One pass of every step; INLINE: reconcile and deliver alerts before returning rather than in the
        background. Returns whether it holds the lease."""
        close_old_connections()
        try:
            held = self.hold_lease()
            if self._redis_lost:  # Redis answers again
                self._redis_lost = False
                self.heartbeats_reset_at = self.now()
                self._seen_at = None
            if not held:
                return False
            self.rebuild_cache_if_missing()
            self.publish_keys()
            self.repair_cache()
            self.mirrored = None
            self.mirror()
            self.raise_alerts(self.mirrored)
            self.prune_audit()  # one batch a pass: a long backlog never holds up the rest
            if inline:
                while self.reconcile_one():
                    pass
                while self.remove_one():
                    pass
                while self.drain_one():
                    pass
                while self.deliver_alerts():
                    pass
                while self.upgrade_step():
                    pass
                while self.backup_one():
                    pass
            else:
                self._reconciler.kick()
                self._deliverer.kick()
                self._upgrader.kick()
                self._backer.kick()
            self.record_health()
            return True
        except redis.RedisError as exc:
            log.warning("Redis unavailable: %s; retrying", exc)
            self.lease.held = False
            self._redis_lost = True
            self.record_health(exc)
            return False

    @acting
    def drain_one(self):
        """Close a move cut off by a crash (apps.moves), or move one application off a draining environment
        (environments.drain); whether there was work."""
        return moves.close_cut_off(self.now()) or drain.step(timeout=self.timeout)

    def _reconcile_all(self):
        try:
            while not self.stop_requested and self.lease.held and self.reconcile_one():
                pass
            while not self.stop_requested and self.lease.held and self.remove_one():
                pass
            if not self.stop_requested and self.lease.held:
                self.drain_one()  # one application a pass: a drain never holds up reconciling for long
        finally:
            close_old_connections()

    def _deliver_all(self):
        try:
            while not self.stop_requested and self.lease.held and self.deliver_alerts():
                pass
        finally:
            close_old_connections()

    def _upgrade_all(self):
        try:
            if not self.stop_requested and self.lease.held:
                self.upgrade_step()
        except redis.RedisError as exc:  # the pass's own retry path reports Redis; the next kick tries again
            log.warning("fleet upgrades: Redis unavailable (%s)", exc)
        except Exception:
            log.exception("fleet upgrades: unexpected error; carrying on")
        finally:
            close_old_connections()

    def _backup_all(self):
        try:
            while not self.stop_requested and self.lease.held and self.backup_one():
                pass
        finally:
            close_old_connections()

    def run(self, once=False):
        try:
            while not self.stop_requested:
                self.run_pass(inline=once)
                if once:
                    break
                self._sleep_unless_stopped(PASS_SECONDS)
        finally:
            self._reconciler.shutdown()
            self._deliverer.shutdown()
            self._upgrader.shutdown()
            self._backer.shutdown()
            with contextlib.suppress(redis.RedisError, OSError):
                self._seen_statuses.close()
            try:
                self.lease.release()
            except redis.RedisError:
                pass

    def request_stop(self, signum=None, frame=None):
        if not self.stop_requested:
            log.info("controller: stop requested, finishing the operation in hand")
        self.stop_requested = True

    def install_signal_handlers(self):
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _sleep_unless_stopped(self, seconds):
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            self.sleep(min(0.1, max(0.0, end - time.monotonic())))


