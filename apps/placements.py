"""Changing where an application runs: the one implementation behind ``PATCH /api/apps/<name>/`` and the admin's
change form (docs/architecture.md, "Changing an application's environments").

The change is recorded first, in one transaction, under the application's lifecycle lock (apps.lifecycle): the new
placements in their new order, and a Removal for each environment left. The configuration cache is published at
once, so the proxy and the workers route by the new environments from then on (an environment left serves the
application no more: 404 there). Then, still under the lock, what can be done now is done: the remove command on
each environment left that is online (its database kept unless asked), and a start on each environment added when
the application is desired running (which provisions it there: database, migrations, its admin account, as a first
start does). An environment offline is waited for: the controller (controller.loop) sends the remove, or the start,
once it is back. A new order only takes effect at the next start.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import actions
from audit import log as audit
from environments.models import Environment
from exchange import contract

from . import lifecycle
from .models import Application, Placement, Removal

log = logging.getLogger("appsup.supervisor")

REMOVED = lifecycle.EXPECTED[contract.REMOVE]
# A remove that failed on an online environment is tried again by the controller after this long, doubling, capped.
RETRY_BASE = 5.0
RETRY_CAP = 300.0
# How many due removals one controller pass looks at.
REMOVALS_PER_PASS = 50


@dataclass
class Change:
    """What a change of environments did: the environments ADDED and REMOVED, and a lifecycle.Step for each command
    it sent (or found it could not send: an offline environment's step has kind lifecycle.OFFLINE)."""

    app: str
    environments: list
    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    reordered: bool = False
    steps: list = field(default_factory=list)

    @property
    def changed(self):
        return bool(self.added or self.removed or self.reordered)

    @property
    def failure(self):
        """The first command that failed on an environment that answered (or did not answer in time)."""
        return next((s for s in self.steps if not s.ok and s.kind != lifecycle.OFFLINE), None)

    @property
    def waiting_for(self):
        """Environments offline, where the controller completes the change once they are back."""
        return [s.environment for s in self.steps if s.kind == lifecycle.OFFLINE]

    def pending_message(self):
        waiting = self.waiting_for
        if not waiting:
            return ""
        parts = []
        removing = [env for env in waiting if env in self.removed]
        starting = [env for env in waiting if env not in removing]
        if removing:
            parts.append(f"removed from {', '.join(removing)}")
        if starting:
            parts.append(f"started on {', '.join(starting)}")
        return (f"{self.app} is {' and '.join(parts)} by the controller once "
                f"{', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} back online")


def change_environments(application, names, drop_database=False, timeout=None, clock=time.monotonic):
    """Make NAMES (environment names, in start order; known, distinct, not empty: the callers' forms check) the
    environments of APPLICATION; returns a Change. DROP_DATABASE: the databases on the environments left are
    dropped rather than kept. TIMEOUT bounds the commands sent (default settings.APP_COMMAND_TIMEOUT). Raises
    lifecycle.OperationInProgress when another operation holds the application."""
    with lifecycle._held(application.name, wait=lifecycle._lock_wait(timeout)) as renew:
        timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
        deadline = clock() + timeout
        lifecycle.runner.sync_environments()  # which environments are online as of now
        application = Application.objects.with_placements().get(pk=application.pk)  # as it is under the lock
        change = _record(application, list(names), drop_database)
        if not change.changed:
            return change
        lifecycle.runner.publish(application)
        for removal in Removal.objects.filter(application=application, environment__name__in=change.removed) \
                .select_related("application", "environment"):
            change.steps.append(_remove_there(removal, deadline, clock, renew))
        if change.removed:
            lifecycle.runner.publish(application)  # the environments it has left for good
        if change.added and application.desired_state == contract.RUNNING:
            remaining = max(1.0, deadline - clock())
            started = lifecycle._run_locked(application, contract.START, remaining, None, False, clock, renew,
                                            only=change.added)
            change.steps += started.steps
        return change


def _record(application, names, drop_database):
    """Write the new placements and the removals (one transaction); returns the Change, no command sent yet."""
    placements = {p.environment.name: p for p in application.ordered_placements()}
    current = list(placements)
    change = Change(application.name, names, added=[n for n in names if n not in placements],
                    removed=[n for n in current if n not in names])
    change.reordered = [n for n in current if n in names] != [n for n in names if n in placements]
    if not change.changed:
        return change
    environments = {e.name: e for e in Environment.objects.filter(name__in=change.added + change.removed)}
    with transaction.atomic():
        Placement.objects.filter(application=application, environment__name__in=change.removed).delete()
        # Added again before its removal ran: the removal is called off, the application (and its data) stay there.
        Removal.objects.filter(application=application, environment__name__in=change.added).delete()
        for name in change.removed:
            Removal.objects.update_or_create(
                application=application, environment=environments[name],
                defaults={"drop_database": drop_database, "requested_at": timezone.now(), "attempts": 0,
                          "next_attempt_at": None, "error": ""})
        for position, name in enumerate(names):
            if name in placements:
                if placements[name].position != position:
                    Placement.objects.filter(pk=placements[name].pk).update(position=position)
            else:
                Placement.objects.create(application=application, environment=environments[name], position=position)
    # The instance the callers hold (and publish) reads its placements again.
    application._prefetched_objects_cache = {}
    return change


def _remove_there(removal, deadline, clock, renew):
    """Send the remove command for REMOVAL's environment and wait for it; returns a lifecycle.Step. Done: the removal
    is deleted; offline: left for the controller; failed: left for the controller, with a next attempt."""
    env, application = removal.environment, removal.application
    began = clock()
    if not env.is_online():
        return lifecycle.Step(env.name, False, contract.UNKNOWN, env.offline_reason(), kind=lifecycle.OFFLINE)
    payload = {
        "admin_username": application.admin_username,
        "admin_password_hash": application.admin_password_hash,
        "drop_database": removal.drop_database,
    }
    # The runner sends a command for a placement; the application has none there any more, so an unsaved one says
    # where (the remote runner only reads its application and environment).
    there = Placement(application=application, environment=env)
    result = lifecycle.runner.execute(there, contract.REMOVE, payload, deadline, clock, renew)
    seconds = clock() - began
    if isinstance(result, lifecycle.Failure):
        step = lifecycle.Step(env.name, False, contract.ERROR, result.message, seconds, kind=result.kind)
    elif result.get("state") != REMOVED:
        step = lifecycle.Step(env.name, False, result.get("state", contract.ERROR), result.get("error") or "",
                              seconds, kind=lifecycle.FAILED)
    else:
        removal.delete()
        lifecycle._observe(contract.REMOVE, lifecycle.Step(env.name, True, REMOVED, "", seconds))
        return lifecycle.Step(env.name, True, REMOVED, "", seconds)
    lifecycle._observe(contract.REMOVE, step)
    attempts = removal.attempts + 1
    delay = min(RETRY_CAP, RETRY_BASE * 2 ** (attempts - 1))
    Removal.objects.filter(pk=removal.pk).update(
        attempts=attempts, error=step.error or f"it ended {step.state}",
        next_attempt_at=timezone.now() + timedelta(seconds=delay))
    log.warning("%s: remove on %s failed (%s); the controller tries again in %.0f s", application.name, env.name,
                step.error, delay)
    return step


def remove_one(now, timeout=None, clock=time.monotonic):
    """The controller's step: send one due removal whose environment is online. Returns whether it sent one."""
    due = (Removal.objects.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
           .select_related("application", "environment").order_by("requested_at")[:REMOVALS_PER_PASS])
    for removal in due:
        if not removal.environment.is_online(now):
            continue
        try:
            with lifecycle._held(removal.application.name) as renew:
                # Read again under the lock: the operator may have added the environment back meanwhile.
                removal = Removal.objects.select_related("application", "environment").filter(pk=removal.pk).first()
                if removal is None:
                    continue
                timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
                step = _remove_there(removal, clock() + timeout, clock, renew)
                log.info("%s: remove on %s, left by a change of its environments: %s", removal.application.name,
                         removal.environment.name, step.line())
                if step.kind != lifecycle.OFFLINE:
                    audit.record(None, actions.APPLICATION_REMOVE, f"{actions.APPLICATION}:{removal.application.name}",
                                 {"environment": removal.environment.name, "drop_database": removal.drop_database},
                                 actions.OK if step.ok else actions.FAILED, detail="" if step.ok else step.line())
                lifecycle.runner.publish(removal.application)
        except lifecycle.OperationInProgress:
            continue  # an operator's command is on this application; the next pass tries again
        if step.kind != lifecycle.OFFLINE:  # gone offline just now: nothing was sent
            return True
    return False
