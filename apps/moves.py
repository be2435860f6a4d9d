"""Move an application from one environment to another with its database (docs/architecture.md, "Moving an
application"): the one implementation behind ``POST /api/apps/<name>/move``, the admin's *Move* action and drains.

Under the application's lifecycle lock, so no start, stop or controller step runs meanwhile:

1. **announce**: an active ``Move`` row puts ``moving: {from, to}`` in the application's cache entry; the source
   then refuses writes (503 ``moving``, workers.hosting) and keeps serving reads, and both environments take the
   move's commands;
2. **dump** on the source (``dump``: engine-native, into a transfer in Redis, exchange.transfer);
3. **load** on the destination (``load``: the bytes checked against the source's SHA-256, then restored);
4. **start** on the destination (migrations, the admin account, running), stopped again if the application is
   desired stopped;
5. **switch**: the destination's placement replaces the source's (same position), the cache entry is published
   and every proxy sends the next request to the destination;
6. **remove** on the source (its database kept unless ``drop_database``).

A failure before the switch leaves the application where it was, running as before: the destination is cleaned
(removed, its database kept), the move is recorded as failed with the step and environment, and the error is
raised as MoveFailed. After the switch the move has happened: a source that cannot be removed is reported in the
move's error, and the controller and the operator can see the source's leftover.
"""

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import actions
from audit import log as audit
from environments.models import Environment
from exchange import contract, transfer
from exchange.redis_client import command_redis

from . import lifecycle
from .models import Application, Move, Placement

log = logging.getLogger("appsup.supervisor")

DUMP, LOAD, START, SWITCH, REMOVE = "dump", "load", "start", "switch", "remove"


class MoveRefused(Exception):
    """The move cannot begin (nothing was done); STATUS is the API's answer."""

    def __init__(self, message, status=400, environment=None):
        super().__init__(message)
        self.status = status
        self.environment = environment


class MoveFailed(Exception):
    """A step failed before the switch: the application is where it was. STEP and ENVIRONMENT say where."""

    def __init__(self, message, step, environment, timeout=False):
        super().__init__(message)
        self.step = step
        self.environment = environment
        self.timeout = timeout


@dataclass
class Moved:
    move: Move
    seconds: float
    warning: str = ""


def check(application, source, destination):
    """The environments named SOURCE and DESTINATION, or MoveRefused saying why APPLICATION cannot move so."""
    for field, name in (("from", source), ("to", destination)):
        if not isinstance(name, str) or not contract.NAME_RE.fullmatch(name):
            raise MoveRefused(f"{field!r} must name an environment ({contract.NAME_RULE})", environment=None)
    if source == destination:
        raise MoveRefused(f"{application.name} cannot move from {source} to itself", environment=source)
    placed = application.environment_names()
    if source not in placed:
        raise MoveRefused(f"{application.name} is not placed on {source} (it is on {', '.join(placed) or 'none'})",
                          environment=source)
    if destination in placed:
        raise MoveRefused(f"{application.name} is already placed on {destination}", environment=destination)
    target = Environment.objects.filter(name=destination).first()
    if target is None:
        raise MoveRefused(f"no environment named {destination!r}", environment=destination)
    refusal = destination_refusal(target)
    if refusal:
        raise MoveRefused(f"{application.name} cannot move to {destination}: {refusal}", environment=destination)
    origin = Environment.objects.get(name=source)
    if not origin.is_online():
        raise MoveRefused(f"{application.name} cannot move from {source}: {origin.offline_reason()}; its data "
                          "there cannot be read", status=409, environment=source)
    return origin, target


def destination_refusal(environment):
    """Why ENVIRONMENT cannot take an application now ("" when it can): it must be online, verified and serving."""
    if environment.rejected:
        return f"its registration did not verify ({environment.rejected})"
    if environment.drain_state is not None:
        return f"it is out of service ({environment.drain_state})"
    status = environment.status()
    if status != contract.ONLINE:
        return environment.status_reason()
    return ""


def move(application, source, destination, drop_database=False, timeout=None, progress=None, clock=time.monotonic):
    """Move APPLICATION from SOURCE to DESTINATION (environment names); returns Moved. Raises MoveRefused (nothing
    done), lifecycle.OperationInProgress, or MoveFailed (the application left where it was)."""
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    began = clock()
    with lifecycle._held(application.name, wait=lifecycle._lock_wait(timeout)) as renew:
        lifecycle.runner.sync_environments()
        application = Application.objects.with_placements().get(pk=application.pk)
        origin, target = check(application, source, destination)
        # Under the lock no move of this application runs: an active one was cut off (its supervisor killed).
        cut_off(application)
        record = Move.objects.create(application=application, source=origin, destination=target,
                                     drop_database=drop_database, step=DUMP)
        deadline = clock() + timeout
        transfer_id = f"{application.name}-{uuid.uuid4().hex[:16]}"
        try:
            started = _copy(record, application, origin, target, transfer_id, deadline, clock, renew, progress)
        except Exception as exc:
            _abandon(record, application, target, exc, deadline, clock, renew)
            raise
        finally:
            with contextlib.suppress(redis.RedisError):
                transfer.discard(command_redis(), transfer_id)
        _advance(record, SWITCH, progress)
        _switch(application, origin, target, started.get("state", contract.RUNNING))
        # Still "moving" in the cache until the source is removed: the source takes only the move's commands now.
        lifecycle.runner.publish(application)
        _advance(record, REMOVE, progress)
        warning = _remove_source(application, origin, drop_database and not _shared(record), deadline, clock, renew)
        if drop_database and _shared(record):
            warning = (f"{origin.name} and {target.name} share {application.name}'s database (one database server): "
                       "it was not dropped. " + warning).strip()
        record.state = Move.DONE
        record.error = warning
        record.finished_at = timezone.now()
        record.save(update_fields=["state", "step", "error", "size", "sha256", "finished_at"])
        with contextlib.suppress(redis.RedisError):
            lifecycle.runner.publish(application)
    return Moved(record, clock() - began, warning)


def _copy(record, application, origin, target, transfer_id, deadline, clock, renew, progress):
    """Steps 1-4: the application's database copied to TARGET and started there; the destination's last answer."""
    lifecycle.runner.publish(application)  # the source refuses writes from now on
    _advance(record, DUMP, progress)
    dumped = _step(application, origin, contract.DUMP, {"transfer": transfer_id}, contract.DUMPED, DUMP, deadline,
                   clock, renew)
    record.size, record.sha256 = dumped.get("size"), dumped.get("sha256") or ""
    _advance(record, LOAD, progress)
    manifest = {key: dumped.get(key) for key in ("engine", "place", "sha256", "size", "chunks")}
    loaded = _step(application, target, contract.LOAD, dict(manifest, transfer=transfer_id), contract.LOADED, LOAD,
                   deadline, clock, renew)
    # One database server (or file) for both: the destination serves the very database, which the source's remove
    # must then not drop.
    record.shared = bool(loaded.get("shared"))
    _advance(record, START, progress)
    payload = {"admin_username": application.admin_username,
               "admin_password_hash": application.admin_password_hash}
    started = _step(application, target, contract.START, payload, contract.RUNNING, START, deadline, clock, renew)
    if application.desired_state == contract.STOPPED:
        started = _step(application, target, contract.STOP, {}, contract.STOPPED, START, deadline, clock, renew)
    return started


def close_cut_off(now=None):
    """The controller's step: close one active move whose supervisor died during it (its application's lock is
    free, so nobody runs it), and publish its application without ``moving`` (the source takes writes again).
    Returns whether there was one."""
    since = (now or timezone.now()) - timedelta(seconds=lifecycle.LOCK_TTL)
    for record in Move.objects.filter(state=Move.ACTIVE, started_at__lt=since).select_related("application"):
        try:
            with lifecycle._held(record.application.name, wait=0):
                cut_off(record.application)
                lifecycle.runner.publish(record.application)
                audit.record(None, actions.APPLICATION_MOVE_CLOSED, f"{actions.APPLICATION}:{record.application.name}",
                             {"move": record.pk})
        except lifecycle.OperationInProgress:  # running after all, or another operation: a later pass looks again
            continue
        return True
    return False


def cut_off(application):
    """Close the active move of APPLICATION left by a supervisor killed during it (called under the application's
    lock, where no move runs). Before its switch the application never left its source; after it, the source was
    not removed, and the error says so."""
    for record in Move.objects.filter(application=application, state=Move.ACTIVE).select_related("source"):
        # Whether the switch's transaction committed, whatever step the record reached.
        after = application.placements.filter(environment=record.destination_id).exists()
        record.state = Move.DONE if after else Move.FAILED
        record.error = (f"cut off after the switch: {application.name} was not removed from {record.source.name}"
                        if after else f"cut off during its {record.step or 'start'}: {application.name} stayed on "
                        f"{record.source.name}")
        record.finished_at = timezone.now()
        record.save(update_fields=["state", "error", "finished_at"])


def _shared(record):
    return getattr(record, "shared", False)


def _advance(record, step, progress):
    record.step = step
    record.save(update_fields=["step", "size", "sha256"])
    if progress:
        progress(step)


def _step(application, environment, command, payload, expected, step, deadline, clock, renew):
    """Run COMMAND on ENVIRONMENT; its answer, or MoveFailed naming STEP and the environment."""
    if not environment.is_online():
        raise MoveFailed(f"{step} on {environment.name} failed: {environment.offline_reason()}", step,
                         environment.name)
    # Not saved: the destination has no placement until the switch (the controller would act on one), and the
    # runner only reads the placement's application and environment.
    placement = Placement(application=application, environment=environment)
    result = lifecycle.runner.execute(placement, command, payload, deadline, clock, renew)
    if isinstance(result, lifecycle.Failure):
        raise MoveFailed(f"{step} on {environment.name} failed: {result.message}", step, environment.name,
                         timeout=result.kind == lifecycle.TIMEOUT)
    if result.get("state") != expected:
        detail = result.get("error") or f"it ended {result.get('state')}"
        raise MoveFailed(f"{step} on {environment.name} failed: {detail}", step, environment.name)
    return result


def _abandon(record, application, target, exc, deadline, clock, renew):
    """After a failure before the switch: take away what the move put on the destination (its database kept),
    record the failure and let the source take writes again. Best effort: EXC is what the caller reports."""
    if record.step in (LOAD, START):
        # A little time of its own: the move's deadline may be what ran out.
        cleanup_deadline = max(deadline, clock() + 30)
        try:
            if target.is_online():
                lifecycle.runner.execute(Placement(application=application, environment=target), contract.REMOVE,
                                         {"drop_database": False}, cleanup_deadline, clock, renew)
        except redis.RedisError as error:
            log.warning("move of %s: could not clean %s: %s", application.name, target.name, error)
    record.state = Move.FAILED
    record.error = str(exc) or type(exc).__name__
    record.finished_at = timezone.now()
    record.save(update_fields=["state", "error", "finished_at", "size", "sha256"])
    try:
        lifecycle.runner.publish(application)
    except redis.RedisError as error:  # the controller's rebuild writes the entry without "moving" once Redis is back
        log.warning("move of %s: could not publish its configuration: %s", application.name, error)


def _switch(application, origin, target, state):
    with transaction.atomic():
        placement = Placement.objects.select_for_update().get(application=application, environment=origin)
        position = placement.position
        placement.delete()
        Placement.objects.create(application=application, environment=target, position=position, state=state,
                                 state_at=timezone.now())


def _remove_source(application, origin, drop_database, deadline, clock, renew):
    """Stop and remove the application on ORIGIN; "" when done, else why not (the move stands)."""
    cleanup_deadline = max(deadline, clock() + 30)
    if not origin.is_online():
        return f"moved, but not removed from {origin.name}: {origin.offline_reason()}"
    result = lifecycle.runner.execute(Placement(application=application, environment=origin), contract.REMOVE,
                                      {"drop_database": drop_database}, cleanup_deadline, clock, renew)
    if isinstance(result, lifecycle.Failure):
        return f"moved, but not removed from {origin.name}: {result.message}"
    if result.get("state") != "removed":
        return f"moved, but not removed from {origin.name}: {result.get('error') or result.get('state')}"
    return ""
