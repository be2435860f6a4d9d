"""The command channel: one django-rq queue per environment, JSON jobs, and a worker that refuses what it must.

JSON keeps whoever can write to Redis from running code through pickle; the allowlist check happens before RQ
imports the function a job names.
"""

import uuid

from django_rq.queues import DjangoRQ
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker

from supervisor_project import contract
from supervisor_project.redis_client import command_redis

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


def enqueue(environment, command, app, payload=None, connection=None):
    """Send COMMAND for APP to ENVIRONMENT's queue; the job is created after the current transaction commits."""
    job_id = f"{command}-{app}-{environment}-{uuid.uuid4().hex[:12]}"
    queue_for(environment, connection).enqueue_call(
        func=contract.COMMAND_FUNCTION,
        kwargs={"command": command, "app": app, "environment": environment, "payload": payload or {}},
        job_id=job_id,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
        description=f"{command} {app} on {environment}",
    )
    return job_id


def refusal(job, environment, is_placed):
    """Why this worker must not run JOB, or None when it may."""
    try:
        job.func_name
    except Exception:  # rq wraps whatever the serializer raised
        return "refused: the job is not a JSON command"
    if job.func_name != contract.COMMAND_FUNCTION:
        return f"refused: {job.func_name!r} is not a command"
    if job.args:
        return "refused: commands take keyword arguments only"
    kwargs = job.kwargs or {}
    command = kwargs.get("command")
    if command not in contract.COMMANDS:
        return f"refused: {command!r} is not an allowed command ({', '.join(contract.COMMANDS)})"
    if kwargs.get("environment") != environment:
        return f"refused: the command is addressed to {kwargs.get('environment')!r}, this is {environment!r}"
    app = kwargs.get("app")
    if command != contract.PING and not is_placed(app):
        return f"refused: application {app!r} is not placed on environment {environment!r}"
    return None


class CommandWorker(SimpleWorker):
    """Runs jobs in this process (no fork: the agent keeps its database connections), allowlist first."""

    def __init__(self, *args, environment, is_placed, **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)
        self.environment = environment
        self.is_placed = is_placed

    def perform_job(self, job, queue, execution):
        reason = refusal(job, self.environment, self.is_placed)
        if reason is None:
            return super().perform_job(job, queue, execution)
        self.log.warning("%s", reason)
        # Recorded like any failed job, so the supervisor waiting on it reads the reason. Nothing here may touch
        # the job's data: it may not even deserialize.
        job.ended_at = now()
        self.handle_job_failure(job, queue, exc_string=f"CommandRefused: {reason}", execution=execution)
        return False
