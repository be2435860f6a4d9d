"""A single instance's reconcile, once at start: it has no controller (runsupervisor), so the process itself brings
every application back to its desired state, e.g. one cut off mid-start by a crash, or whose start failed."""

import logging

from django.db import DatabaseError, connections

from apps import lifecycle
from apps.models import Application

from . import environment

log = logging.getLogger("appsup.single")


def resume():
    """Register the local environment, then converge each drifting application in turn. Returns the names of
    those it acted on."""
    acted = []
    try:
        local = environment.ensure().name
        drifting = list(Application.objects.drifting().filter(placements__environment__name=local).distinct())
    except DatabaseError as exc:  # not migrated yet, say: pages will say what is wrong
        log.error("single instance: cannot read the applications to resume (%s); run `manage.py migrate`", exc)
        return acted
    try:
        for application in drifting:
            try:
                outcome = lifecycle.converge(application, [local])
            except lifecycle.OperationInProgress:
                continue  # an operator's command got there first
            except Exception:  # one application's failure must not keep the others stopped
                log.exception("single instance: could not bring %s to %s", application.name, application.desired_state)
                continue
            if outcome is not None:
                acted.append(application.name)
                for step in outcome.steps:
                    log.info("single instance: %s %s", application.name, step.line())
    finally:
        connections.close_all()  # this thread's own connections
    return acted
