"""The worker's side of the command channel (exchange.channel): a worker that refuses what it must before RQ
imports the function a job names: anything not signed by the supervisor (exchange.keys: a job signed by an
environment's key, whoever's, is refused), not a command, not for this environment, stale, or already run.
"""

import time

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, transaction
from rq.utils import now
from rq.worker import SimpleWorker

from exchange import contract, signing
from exchange.channel import CommandJob, binding, seal_failure, worker_serializer

from .models import ExecutedCommand

NOT_THE_SUPERVISORS = "refused: the job is not a command signed by the supervisor"


def refusal(job, environment, is_placed, clock=time.time, generation_of=None):
    """Why this worker must not run JOB, or None when it may. IS_PLACED(app) says whether the configuration places
    the application here; GENERATION_OF(app) gives its current incarnation, None when unknown."""
    try:
        # The job's data must be the supervisor's: the serializer would take any known signer's (results are the
        # environments'), and an environment's key must command no one, not even itself.
        signing.unseal(job.data, signing.SUPERVISOR)
    except (signing.BadSignature, ImproperlyConfigured) as exc:
        return f"{NOT_THE_SUPERVISORS} ({exc})"
    try:
        job.func_name
    except Exception:  # rq wraps whatever the serializer raised
        return f"{NOT_THE_SUPERVISORS} (it does not deserialize)"
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
    if kwargs.get("job_id") != job.id:
        return f"refused: the command was signed for job {kwargs.get('job_id')!r}, not {job.id!r} (a copy)"
    # The sender stopped waiting at expires_at and reported the command as failed: running it now would act
    # behind the operator's back.
    expires_at = kwargs.get("expires_at")
    if not _is_time(expires_at) or not _is_time(kwargs.get("issued_at")):
        return "refused: the command carries no issue or expiry time"
    late = clock() - expires_at
    if late > 0:
        return f"refused: the command is stale, its sender stopped waiting {late:.0f} s ago"
    app = kwargs.get("app")
    if command != contract.PING and not is_placed(app):
        return f"refused: application {app!r} is not placed on environment {environment!r}"
    if command != contract.PING:
        return _incarnation_refusal(kwargs, generation_of(app) if generation_of is not None else None)
    return None


def _incarnation_refusal(kwargs, current):
    """A command is for one application, not for whatever bears its name later: once the application was removed and
    created again, a command issued before (replayed from Redis, where its signed data stays for an hour) is refused,
    even by a worker that has no record of running it (a new pod, new storage).

    Either incarnation unknown (a supervisor or a cache entry from before incarnations existed, during an upgrade):
    the command runs, except a remove that drops the database, which cannot be undone."""
    issued_for = kwargs.get("generation")
    app = kwargs.get("app")
    if issued_for and current and issued_for != current:
        return (f"refused: the command was issued for an earlier application of that name ({app!r} was removed and "
                f"created again since)")
    payload = kwargs.get("payload")
    dropping = isinstance(payload, dict) and payload.get("drop_database")
    if kwargs.get("command") == contract.REMOVE and dropping and not (issued_for and current):
        return (f"refused: a remove that drops {app!r}'s database must name the application's incarnation, and "
                f"{'the command' if not issued_for else 'its configuration'} does not")
    return None


def _is_time(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def first_run(job, attempts=5):
    """Record that JOB runs here; False when it already did (its signed data was pushed again: a replay)."""
    for attempt in range(attempts):
        try:
            with transaction.atomic():
                ExecutedCommand.objects.filter(expires_at__lt=time.time()).delete()  # refused as stale anyway
                ExecutedCommand.objects.create(job_id=job.id, expires_at=job.kwargs["expires_at"])
            return True
        except IntegrityError:
            return False
        except OperationalError:  # SQLite, with another writer of this database: "database is locked"
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class CommandWorker(SimpleWorker):
    """Runs jobs in this process (no fork: the agent keeps its database connections), allowlist first."""

    def __init__(self, *args, environment, is_placed, generation_of=None, on_refusal=None, **kwargs):
        kwargs.setdefault("serializer", worker_serializer(environment))
        kwargs.setdefault("job_class", CommandJob)
        super().__init__(*args, **kwargs)
        self.environment = environment
        self.is_placed = is_placed
        self.generation_of = generation_of  # app -> its current incarnation, None when unknown
        self.on_refusal = on_refusal  # (job_id, reason) -> None: the agent shows its last refusal

    def perform_job(self, job, queue, execution):
        reason = refusal(job, self.environment, self.is_placed, generation_of=self.generation_of)
        # A replayed ping changes nothing; every other command is recorded (a database write) and run once.
        if reason is None and job.kwargs["command"] != contract.PING and not first_run(job):
            reason = f"refused: job {job.id} already ran here (a replay)"
        if reason is None:
            return super().perform_job(job, queue, execution)
        self.log.warning("%s", reason)
        # Recorded like any failed job, so the supervisor waiting on it reads the reason. Nothing here may touch
        # the job's data: it may not even deserialize.
        job.ended_at = now()
        self.handle_job_failure(job, queue, exc_string=f"CommandRefused: {reason}", execution=execution)
        if self.on_refusal is not None:
            self.on_refusal(job.id, reason)
        return False

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # Every failure RQ records through this worker (a refusal, an exception, a job timeout) is sealed with the job
        # it answers, as a result is.
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=sealed_failure(job, exc_string, self.environment),
                                   execution=execution)


def sealed_failure(job, error, environment):
    """ERROR as JOB's failure (exchange.channel.seal_failure): bound to the job's id, and to its application,
    environment and command when its signed data says them (a refused job may not even verify)."""
    try:
        kwargs = job.kwargs if isinstance(job.kwargs, dict) else {}
    except Exception:  # the serializer's refusal (a bad signature), wrapped by rq
        kwargs = {}
    return seal_failure(binding(job.id, kwargs.get("app"), kwargs.get("environment"), kwargs.get("command")), error,
                        signer=environment)
