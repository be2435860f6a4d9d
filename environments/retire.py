"""Forget an environment that will never answer (docs/architecture.md, "Retiring an environment"): the one
implementation behind ``DELETE /api/environments/<name>`` and the admin's "Forget environment".

An environment that hosts nothing and is offline is deleted as it always was. One that hosts applications is only
forgotten when the operator says so (``force``): its placements go with it, each application keeps its other
placements and keeps running there, and what it had on the environment (its database, its files) is left there,
not reachable from the supervisor. An online environment is never forgotten: its worker would register it again
at once. A worker that was thought dead and comes back registers again and is a new environment, hosting nothing.
"""

from django.db import transaction

from apps import cache
from apps.models import Application, Placement
from exchange import events, registry, status
from exchange.redis_client import supervisor_redis

from . import mirror as registry_mirror


class Refused(Exception):
    """Why an environment cannot be forgotten (as asked), in words for the operator; APPLICATIONS: those it hosts."""

    def __init__(self, message, applications=()):
        super().__init__(message)
        self.applications = list(applications)


def hosted(environment):
    """The names of the applications placed on ENVIRONMENT, by name."""
    return list(Application.objects.filter(placements__environment=environment).order_by("name")
                .values_list("name", flat=True))


def stranded(environment):
    """Of the applications placed on ENVIRONMENT, those placed nowhere else (forgetting it leaves them none)."""
    others = Placement.objects.exclude(environment=environment).values("application_id")
    return list(Application.objects.filter(placements__environment=environment).exclude(pk__in=others)
                .order_by("name").values_list("name", flat=True))


def consequence(environment, applications):
    """What forgetting ENVIRONMENT does to APPLICATIONS (those it hosts), in one paragraph for the operator."""
    alone = stranded(environment)
    text = (f"Forgetting {environment.name} removes the environment and its placements of {', '.join(applications)}: "
            "the applications keep their other placements and keep running there; their data on "
            f"{environment.name} (databases, files) is not reachable and is not deleted.")
    if alone:
        text += (f" Hosted only on {environment.name}: {', '.join(alone)}, left with no environment (delete "
                 "them, or place them elsewhere).")
    return text


def blocker(environment, force):
    """Refused (not raised) when ENVIRONMENT may not be forgotten, FORCE or not; else None."""
    if environment.is_online():
        return Refused(f"environment {environment.name} is online: its worker would register it again at once. "
                       "Stop its worker (runworker) first; once it shows offline, forget it.")
    applications = hosted(environment)
    if applications and not force:
        return Refused(f"environment {environment.name} hosts applications ({', '.join(applications)}). "
                       f"{consequence(environment, applications)} To do that, ask again with force=true.",
                       applications)
    return None


def forget(environment, force=False, redis=None):
    """Delete ENVIRONMENT, its placements (FORCE: needed when it hosts any) and its registration in Redis; each
    application it hosted is published again without it, and its status there dropped, so neither the proxy nor
    the pages offer it any more. Raises Refused, or redis.RedisError (nothing deleted then). Returns the names of
    the applications it hosted."""
    r = redis or supervisor_redis()
    registry_mirror.sync(r)  # online or not as of now, not as of the controller's last pass
    environment.refresh_from_db()
    refusal = blocker(environment, force)
    if refusal is not None:
        raise refusal
    with transaction.atomic():
        applications = hosted(environment)
        Placement.objects.filter(environment=environment).delete()
        environment.delete()
        # In the transaction: if Redis refuses, nothing is deleted, and the next refresh would not bring it back.
        registry.forget(r, [environment.name])
        for application in Application.objects.with_placements().filter(name__in=applications):
            cache.publish(r, application)
            status.forget(r, application.name, [environment.name])
    for name in applications:
        events.publish(r, events.APP, name=name)
    return applications
