"""Management commands across applications (docs/architecture.md, "Commands across applications"): the
``manage`` command sent to each environment of each application named, every job enqueued first (so the
environments work side by side, each agent one command at a time), then each answer read as it comes. One
application's failure, refusal or offline environment is its own result; the others go on.
"""

import time
from dataclasses import dataclass

import redis as redis_lib
from django.conf import settings

from apps import lifecycle
from apps.models import Application
from environments import mirror as registry_mirror
from exchange import channel, contract
from exchange.redis_client import supervisor_redis


class Refused(ValueError):
    pass


@dataclass
class Result:
    app: str
    environment: str
    exit_status: int | None  # None: it did not run (offline, refused, no answer)
    output: str = ""
    truncated: int = 0  # characters of output the worker dropped
    error: str = ""

    @property
    def ok(self):
        return self.exit_status == 0 and not self.error

    def as_dict(self):
        return {"app": self.app, "environment": self.environment, "exit_status": self.exit_status,
                "output": self.output, "truncated": self.truncated, "error": self.error or None, "ok": self.ok}


def check(name, args):
    why = contract.manage_refusal(name, args)
    if why is not None:
        raise Refused(why)


def run(applications, name, args, timeout=None, on_result=None, clock=time.monotonic):
    """Run the management command NAME with ARGS in each of APPLICATIONS, on each of their environments. Returns
    the Results in order (application, then start order); ON_RESULT(result) is called as each is known. Raises
    Refused for a name or arguments refused before anything is sent."""
    check(name, args)
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    deadline = clock() + timeout
    registry_mirror.sync(supervisor_redis())  # liveness as of now
    sent = []
    for application in applications:
        for placement in application.ordered_placements():
            environment = placement.environment
            if not environment.is_online():
                sent.append((application, environment.name, None, f"not run: {environment.offline_reason()}"))
                continue
            try:
                job_id = channel.enqueue(environment.name, contract.MANAGE, application.name,
                                         {"name": name, "args": list(args)},
                                         expires_at=time.time() + max(0.0, deadline - clock()),
                                         generation=application.generation)
            except redis_lib.RedisError as exc:
                sent.append((application, environment.name, None, f"not run: Redis unavailable ({exc})"))
                continue
            sent.append((application, environment.name, job_id, ""))
    results = []
    for application, environment, job_id, error in sent:
        if job_id is None:
            result = Result(application.name, environment, None, error=error)
        else:
            answer = lifecycle._wait(job_id, environment, deadline, clock, command=contract.MANAGE,
                                     app=application.name)
            result = _result(application.name, environment, answer)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _result(app, environment, answer):
    if isinstance(answer, lifecycle.Failure):
        return Result(app, environment, None, error=answer.message)
    status = answer.get("exit_status")
    return Result(app, environment, status if isinstance(status, int) else None,
                  output=str(answer.get("output") or ""), truncated=int(answer.get("truncated") or 0),
                  error=str(answer.get("error") or ""))


def applications(names=None):
    """The applications NAMES (all, by name, when None), with their placements; Refused naming unknown ones."""
    query = Application.objects.with_placements().order_by("name")
    if names is None:
        return list(query)
    found = {application.name: application for application in query.filter(name__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise Refused(f"no application named {', '.join(repr(n) for n in unknown)}")
    return [found[name] for name in names]
