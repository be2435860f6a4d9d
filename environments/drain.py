"""Draining an environment (docs/architecture.md, "Draining an environment"): taking it out of service and moving
its applications away, the way ``kubectl drain`` empties a node.

``request`` marks it (it takes no new placement from then on) and answers at once; the controller
(controller.loop) calls ``step`` on each pass, which moves one application off one draining environment (apps.moves)
to the online environment with the fewest applications that does not host it already. An application no
environment can take is stopped there when it runs nowhere else (desired stopped, so the controller does not start
it again), and left with the reason in ``drain_left``; so is one whose move failed (it keeps running where it was).
Once nothing is left to try, the environment is ``drained``. ``undrain`` returns it to service.
"""

import contextlib
import logging

import redis
from django.db import models
from django.utils import timezone

from apps import lifecycle, moves
from apps.models import Application
from audit import actions
from audit import log as audit
from exchange import contract, events
from exchange.redis_client import supervisor_redis

from .models import Drain, Environment

log = logging.getLogger("appsup.supervisor")


def request(environment):
    """Take ENVIRONMENT out of service; a drain already asked for goes on as it is."""
    Drain.objects.get_or_create(environment=environment)
    _announce(environment.name)
    return _fresh(environment)


def undrain(environment):
    Drain.objects.filter(environment=environment).delete()
    _announce(environment.name)
    return _fresh(environment)


def _announce(name):
    """Tell open pages and /ws/events/ that the environment changed (they read it again: its drain's progress)."""
    with contextlib.suppress(redis.RedisError):
        events.publish(supervisor_redis(), events.ENVIRONMENT, name=name)


def _fresh(environment):
    return Environment.objects.select_related("drain").get(pk=environment.pk)


def destination_for(application, now=None):
    """The online, serving, not draining environment with the fewest applications that does not host
    APPLICATION, or None."""
    placed = application.placements.values_list("environment_id", flat=True)
    candidates = (Environment.objects.online(now).filter(drain__isnull=True)
                  .exclude(web_ok=False).exclude(pk__in=placed)
                  .annotate(hosted=models.Count("placements")).order_by("hosted", "name"))
    return candidates.first()


def step(timeout=None):
    """Move (or leave) one application of one draining environment, or mark one drained. Returns whether there
    was work."""
    for drain in Drain.objects.filter(drained_at__isnull=True).select_related("environment"):
        environment, left = drain.environment, drain.left or {}
        application = (Application.objects.filter(placements__environment=environment)
                       .exclude(name__in=list(left)).order_by("name").first())
        if application is None:
            if Drain.objects.filter(pk=drain.pk, drained_at__isnull=True).update(drained_at=timezone.now()):
                audit.record(None, actions.ENVIRONMENT_DRAINED, f"{actions.ENVIRONMENT}:{environment.name}",
                             {"left": left})
            _announce(environment.name)
            return True
        reason = _move_away(application, environment, timeout)
        if reason is not None:
            audit.record(None, actions.APPLICATION_MOVE, f"{actions.APPLICATION}:{application.name}",
                         {"from": environment.name, "why": "drain"}, actions.FAILED if reason else actions.OK,
                         detail=reason)
        if reason:
            Drain.objects.filter(pk=drain.pk).update(left=dict(left, **{application.name: reason}))
        _announce(environment.name)
        return True
    return False


def _move_away(application, environment, timeout):
    """Move APPLICATION off ENVIRONMENT; "" when it moved, None when another operation holds it (tried again on a
    later pass), else why it was left there."""
    destination = destination_for(application)
    if destination is None:
        reason = f"no online environment that does not host {application.name} can take it"
        if application.placements.count() == 1 and application.desired_state == contract.RUNNING:
            try:
                outcome = lifecycle.run(application, contract.STOP, timeout=timeout)
                reason += "; stopped" if outcome.ok else f"; could not be stopped: {outcome.failure.error}"
            except lifecycle.OperationInProgress:
                return None
        return reason
    try:
        moves.move(application, environment.name, destination.name, timeout=timeout)
    except lifecycle.OperationInProgress:
        return None
    except (moves.MoveRefused, moves.MoveFailed) as exc:
        log.warning("drain of %s: %s was not moved: %s", environment.name, application.name, exc)
        return f"not moved to {destination.name}: {exc}"
    return ""
