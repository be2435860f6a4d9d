"""The command channel: one django-rq queue per environment, signed JSON jobs (workers.channel runs them).

JSON keeps whoever can write to Redis from running code through pickle; the signature (exchange.signing) keeps
them from issuing commands at all; the worker's allowlist check happens before RQ imports the function a job
names. Every field of RQ's job hash that our commands do not set is ignored (CommandJob): the hash is untrusted.
"""

import time
import uuid

from django_rq.queues import DjangoRQ
from rq.job import Job
from rq.queue import Queue

from . import contract, signing
from .redis_client import command_redis
from .signing import SignedJSONSerializer

# A command's own work (create a database, migrate) must finish within this.
JOB_TIMEOUT = 600
# Results are read by the supervisor right away; keep them long enough for a slow reader, not forever.
RESULT_TTL = 3600
# What names the job an answer is for, inside its signed value: a result (the return value) and a failure (its
# sealed exc_string, below) are accepted only by whoever waits for exactly that job (apps.lifecycle._wait).
ANSWER_BINDING = ("job_id", "app", "environment", "command")


class CommandJob(Job):
    """RQ's job, minus every field of the job hash our commands never set. Anyone who can write to Redis can add
    callbacks (imported and called by RQ), webhooks (HTTP requests sent by the worker), dependencies, retries or
    repeats to a job hash, none of which the signature covers: all are dropped as the job is read."""

    def restore(self, raw_data):
        super().restore(raw_data)
        self._success_callback_name = self._failure_callback_name = self._stopped_callback_name = None
        self._success_callback = self._failure_callback = self._stopped_callback = None
        self.webhooks = []
        self._dependency_ids = []
        self.allow_dependency_failures = None
        self.number_of_retries = self.retries_left = None
        self.retry_intervals = None
        self.repeats_left = None
        self.group_id = None
        self.timeout = JOB_TIMEOUT
        self.result_ttl = self.failure_ttl = RESULT_TTL
        self.meta = {}


class CommandQueue(DjangoRQ):
    """django-rq's queue (enqueue on commit), for queues made at run time rather than declared in RQ_QUEUES."""

    job_class = CommandJob

    def original_enqueue_call(self, *args, **kwargs):
        # DjangoRQ looks the queue up in RQ_QUEUES here for a default TTL; ours pass result_ttl themselves.
        return Queue.enqueue_call(self, *args, **kwargs)

    # Commands have no dependents: a dependents set planted in Redis is never acted on.
    def enqueue_dependents(self, *args, **kwargs):
        return None

    def move_dependents_to_ready(self, *args, **kwargs):
        return {}


def queue_for(environment, connection=None):
    return CommandQueue(
        contract.queue_name(environment),
        connection=connection or command_redis(),
        serializer=SignedJSONSerializer,
        job_class=CommandJob,
        default_timeout=JOB_TIMEOUT,
    )


def enqueue(environment, command, app, payload=None, connection=None, expires_at=None, generation=None):
    """Send COMMAND for APP to ENVIRONMENT's queue; the job is created after the current transaction commits.

    EXPIRES_AT (epoch seconds) is when the sender stops waiting for the answer: a worker that picks the job up
    later refuses it as stale, so that a command reported as failed never runs behind the operator's back.
    GENERATION is the application's incarnation (apps.models.Application.generation): a worker refuses the command
    once the application of that name is another one (removed and created again), whatever it remembers.
    """
    job_id = f"{command}-{app}-{environment}-{uuid.uuid4().hex[:12]}"
    # Signed with the rest: the job id binds the command to this one job (a copy under another id is refused),
    # the issue time dates it.
    issued_at = time.time()
    kwargs = {"command": command, "app": app, "environment": environment, "payload": payload or {},
              "job_id": job_id, "issued_at": issued_at,
              "expires_at": expires_at if expires_at is not None else issued_at + JOB_TIMEOUT,
              "generation": generation}
    queue_for(environment, connection).enqueue_call(
        func=contract.COMMAND_FUNCTION,
        kwargs=kwargs,
        job_id=job_id,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
        description=f"{command} {app} on {environment}",
    )
    return job_id


def binding(job_id, app, environment, command):
    return {"job_id": job_id, "app": app, "environment": environment, "command": command}


def is_bound(value, expected):
    """Whether VALUE (a result, or a failure's opened seal) names exactly the job EXPECTED (``binding``) names."""
    return isinstance(value, dict) and all(value.get(key) == expected.get(key) for key in ANSWER_BINDING)


def worker_serializer(environment):
    """What ENVIRONMENT's worker reads jobs and writes results with: its results are signed as that environment."""
    return SignedJSONSerializer.signing_as(environment)


def seal_failure(bound, error, signer=None):
    """A failed job's exc_string: ERROR signed together with BOUND (``binding``), the job it answers. RQ stores the
    exc_string as it is, unsigned: sealed, a failure copied from another job is recognised as not this job's."""
    return signing.dumps(dict(bound, error=error), signer=signer).decode()


def open_failure(exc_string, environment=None):
    """The ``{job_id, app, environment, command, error}`` a sealed failure carries, or None when it does not verify
    (as ENVIRONMENT's, given: the environment that ran the job)."""
    opened = signing.loads_or_none(exc_string, environment)
    return opened if isinstance(opened, dict) and isinstance(opened.get("error"), str) else None
