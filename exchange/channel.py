"""The command channel: one django-rq queue per environment, JSON jobs (workers.channel runs them).

JSON keeps whoever can write to Redis from running code through pickle; the worker's allowlist check happens
before RQ imports the function a job names.
"""

import uuid

from django_rq.queues import DjangoRQ
from rq.queue import Queue
from rq.serializers import JSONSerializer

from . import contract
from .redis_client import command_redis

# A command's own work (create a database, migrate) must finish within this.
JOB_TIMEOUT = 600
# Results are read by the supervisor right away; keep them long enough for a slow reader, not forever.
RESULT_TTL = 3600


class CommandQueue(DjangoRQ):
    """django-rq's queue (enqueue on commit), for queues made at run time rather than declared in RQ_QUEUES."""

    def original_enqueue_call(self, *args, **kwargs):
        # DjangoRQ looks the queue up in RQ_QUEUES here for a default TTL; ours pass result_ttl themselves.
        return Queue.enqueue_call(self, *args, **kwargs)


def queue_for(environment, connection=None):
    return CommandQueue(
        contract.queue_name(environment),
        connection=connection or command_redis(),
        serializer=JSONSerializer,
        default_timeout=JOB_TIMEOUT,
    )


def enqueue(environment, command, app, payload=None, connection=None, expires_at=None):
    """Send COMMAND for APP to ENVIRONMENT's queue; the job is created after the current transaction commits.

    EXPIRES_AT (epoch seconds) is when the sender stops waiting for the answer: a worker that picks the job up
    later refuses it as stale, so that a command reported as failed never runs behind the operator's back.
    """
    job_id = f"{command}-{app}-{environment}-{uuid.uuid4().hex[:12]}"
    kwargs = {"command": command, "app": app, "environment": environment, "payload": payload or {}}
    if expires_at is not None:
        kwargs["expires_at"] = expires_at
    queue_for(environment, connection).enqueue_call(
        func=contract.COMMAND_FUNCTION,
        kwargs=kwargs,
        job_id=job_id,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
        description=f"{command} {app} on {environment}",
    )
    return job_id
