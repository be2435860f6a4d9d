"""Start, stop, restart and remove applications across their environments: the one implementation behind the
admin actions, the JSON API and ``manage.py startapp_sequential``.

Environments are taken one after the other in the application's order, because starting writes to the shared
database. An offline environment fails before anything is sent to it; a start stops at the first failure.
"""

import contextlib
import logging
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import LockError
from rq.results import Result

from environments import mirror as registry_mirror
from exchange import channel, contract, events, registry, status
from exchange.channel import CommandJob
from exchange.locks import SignedLock
from exchange.redis_client import command_redis, supervisor_redis
from exchange.signing import SignedJSONSerializer
from monitoring import metrics

from . import cache
from . import mirror as status_mirror
from .models import Application, Placement, restart_pending_q

log = logging.getLogger("appsup.supervisor")

# The lifecycle lock expires this many seconds after its holder last renewed it, which it does while it waits for
# the workers: a supervisor process killed mid-operation (a deploy, the OOM killer) blocks its application this
# long, not until a long operation's timeout.
LOCK_TTL = 15
# The longest an operation may be given (?timeout=, --timeout).
MAX_TIMEOUT = 3600
# How long an operator's command waits for another operation on the same application (usually the controller
# finishing a step) before answering that one is in progress.
LOCK_WAIT = 10


class OperationInProgress(Exception):
    def __init__(self, app):
        super().__init__(f"another start/stop/restart of {app} is in progress; try again when it ends")


# Why a step failed, for callers that answer differently (the API's status codes).
OFFLINE = "offline"  # nothing was sent
TIMEOUT = "timeout"  # no answer in time
LOST = "lost"  # the environment went away while running the command
FAILED = "failed"  # the worker ran or refused the command, and it did not succeed


@dataclass
class Step:
    environment: str
    ok: bool
    state: str
    error: str = ""
    seconds: float = 0.0
    kind: str = ""  # one of the failure kinds above when not ok

    def line(self):
        if self.ok:
            return f"{self.environment}: {self.state} ({self.seconds:.1f} s)"
        return f"{self.environment}: FAILED: {self.error}"


@dataclass
class Outcome:
    app: str
    command: str
    steps: list = field(default_factory=list)

    @property
    def failure(self):
        return next((s for s in self.steps if not s.ok), None)

    @property
    def ok(self):
        return self.failure is None

    @property
    def waiting_for(self):
        """Environments that were offline, where the desired state is left for the controller to complete."""
        return [s.environment for s in self.steps if s.kind == OFFLINE]


EXPECTED = {
    contract.START: contract.RUNNING,
    contract.RESTART: contract.RUNNING,
    contract.STOP: contract.STOPPED,
    contract.REMOVE: "removed",
}
DESIRED = {contract.START: contract.RUNNING, contract.RESTART: contract.RUNNING, contract.STOP: contract.STOPPED}


def run(application, command, timeout=None, progress=None, drop_database=False, clock=time.monotonic):
    """Run COMMAND for APPLICATION on each of its environments in order; returns an Outcome.

    START, STOP and RESTART first record the desired state, which is kept when an environment is offline: the
    controller (runsupervisor) completes the command there once it is back. A restart that could not reach an
    environment is counted on its placement (and on those after it in start order), and carried out there once;
    a stop cancels restarts still waiting. TIMEOUT bounds the whole operation
    (default settings.APP_COMMAND_TIMEOUT). PROGRESS, if given, is called with each Step as it completes. Raises
    OperationInProgress if another operation holds the application.
    """
    with _held(application.name, wait=_lock_wait(timeout)) as renew:
        return _run_locked(application, command, timeout, progress, drop_database, clock, renew)


def _lock_wait(timeout):
    return min(LOCK_WAIT, settings.APP_COMMAND_TIMEOUT if timeout is None else timeout)


def converge(application, environments, timeout=None, clock=time.monotonic):
    """The controller's action: bring APPLICATION to its desired state on ENVIRONMENTS (names, in start order),
    without changing that desired state. Returns None, sending nothing, when the operator changed the desired
    state since the controller read it (checked under the lock, so a start the operator no longer wants is never
    sent), or when Redis shows every one of ENVIRONMENTS in that state already. A placement with a restart waiting
    (asked for while its environment was offline) is restarted rather than started, once."""
    desired = application.desired_state
    with _held(application.name) as renew:
        current = Application.objects.filter(pk=application.pk).values_list("desired_state", flat=True).first()
        if current != desired:
            return None
        # What the controller planned from may be a pass old: an operator's command that just released the lock
        # may have done it already. Only environments still away from the desired state get a command.
        placements = application.placements.select_related("environment", "application").filter(
            environment__name__in=environments)
        runner.refresh(placements)
        restart = set()
        behind = ~Q(state=desired)
        if desired == contract.RUNNING:
            restart = set(placements.filter(restart_pending_q()).values_list("environment__name", flat=True))
            behind |= restart_pending_q()
        behind = set(placements.filter(behind).values_list("environment__name", flat=True))
        environments = [name for name in environments if name in behind]
        if not environments:
            return None
        command = contract.START if desired == contract.RUNNING else contract.STOP
        # Said here, under the lock: before it, a restore holding the lock had "start on …" logged at every pass.
        log.info("%s: %s on %s (desired %s), by the controller", application.name, command, ", ".join(environments),
                 desired)
        return _run_locked(application, command, timeout, None, False, clock, renew, only=environments,
                           restart=restart)


@contextlib.contextmanager
def _held(app, wait=0):
    """The application's lifecycle lock, for the block, waiting up to WAIT seconds for it; yields a function that
    renews it."""
    if connection.in_atomic_block:
        # Jobs are enqueued on commit: waiting for them inside a transaction would wait forever.
        raise RuntimeError("lifecycle operations must not run inside a database transaction")
    with runner.held(app, wait) as renew:
        yield renew


@contextlib.contextmanager
def _redis_lock(app, wait):
    # Signed: a lock value planted by someone without the secret is broken, not waited for.
    lock = SignedLock(supervisor_redis(), contract.lock_key(app), contract.APP_LOCK, timeout=LOCK_TTL)
    if not lock.acquire(blocking=wait > 0, blocking_timeout=wait or None):
        raise OperationInProgress(app)

    def renew():
        try:
            lock.reacquire()
        except LockError as exc:
            log.warning("lifecycle lock of %s could not be renewed: %s", app, exc)

    try:
        yield renew
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _run_locked(application, command, timeout, progress, drop_database, clock, renew, only=None, restart=()):
    """RESTART: the environments where a START is a restart waiting since they were offline (the controller's)."""
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    deadline = clock() + timeout
    runner.sync_environments()
    if command in DESIRED and only is None:
        Application.objects.filter(pk=application.pk).update(desired_state=DESIRED[command])
        application.desired_state = DESIRED[command]
    runner.publish(application)
    payload = {
        "admin_username": application.admin_username,
        "admin_password_hash": application.admin_password_hash,
        "drop_database": drop_database,
    }
    outcome = Outcome(application.name, command)
    placements = list(application.placements.select_related("environment", "application").order_by("position"))
    if only is not None:
        placements = [p for p in placements if p.environment.name in only]
    if command == contract.STOP and only is None:
        # The operator wants it stopped: a restart still waiting for an offline environment is no longer wanted.
        application.placements.filter(restart_pending_q()).update(restarts_done=F("restarts_asked"))
    if command == contract.REMOVE:
        # Removing from some environments and not others would leave the application half gone.
        offline = [p.environment for p in placements if not p.environment.is_online()]
        if offline:
            step = Step(offline[0].name, False, contract.UNKNOWN, offline[0].offline_reason(), kind=OFFLINE)
            outcome.steps.append(step)
            _observe(command, step)
            if progress:
                progress(step)
            return outcome
    for placement in placements:
        action = contract.RESTART if placement.environment.name in restart else command
        claimed = action == contract.RESTART and _claim_restarts(placement)
        step = _run_on(placement, action, payload, deadline, clock, renew)
        if claimed and step.kind == OFFLINE:
            _give_back_restarts(placement)  # nothing was sent: still to do once it is back
        outcome.steps.append(step)
        _observe(action, step)
        if progress:
            progress(step)
        if not step.ok and command in (contract.START, contract.RESTART):
            break
    if command == contract.RESTART and only is None and outcome.waiting_for:
        _keep_restart(placements, outcome)
    return outcome


def _claim_restarts(placement):
    """Count the restarts asked for PLACEMENT (as read with it) as done, before the restart is sent: whatever
    becomes of it (carried out, or failed: drift the controller deals with as any other), it is never sent again,
    even by a controller that takes over after this one died waiting. A restart asked for meanwhile stays waiting.
    Returns whether there were any."""
    return Placement.objects.filter(pk=placement.pk, restarts_done__lt=placement.restarts_asked).update(
        restarts_done=placement.restarts_asked) == 1


def _give_back_restarts(placement):
    Placement.objects.filter(pk=placement.pk, restarts_done=placement.restarts_asked).update(
        restarts_done=placement.restarts_done)


def _keep_restart(placements, outcome):
    """An operator's restart stopped by an offline environment: the placements it did not reach (that one, and
    those after it in start order) each count a restart, which the controller carries out once they are back."""
    reached = {s.environment for s in outcome.steps if s.kind != OFFLINE}
    left = [p.pk for p in placements if p.environment.name not in reached]
    Placement.objects.filter(pk__in=left).update(restarts_asked=F("restarts_asked") + 1)


def _run_on(placement, command, payload, deadline, clock, renew):
    env = placement.environment
    began = clock()
    if not env.is_online():
        return Step(env.name, False, contract.UNKNOWN, env.offline_reason(), kind=OFFLINE)
    result = runner.execute(placement, command, payload, deadline, clock, renew)
    seconds = clock() - began
    if isinstance(result, Failure):  # the supervisor's own finding: timeout, refusal, crash, environment lost
        _record_failure(placement, result.message)
        return Step(env.name, False, contract.ERROR, result.message, seconds, kind=result.kind)
    runner.refresh([placement])
    expected = EXPECTED[command] if command in EXPECTED else result.get("state")
    if result.get("state") != expected:
        state = result.get("state", contract.ERROR)
        return Step(env.name, False, state, result.get("error") or "", seconds, kind=FAILED)
    return Step(env.name, True, result["state"], "", seconds)


def _observe(command, step):
    """Count STEP in the command-duration metric; a metric that cannot be written never fails the command."""
    try:
        metrics.observe_step(command, step)
    except DatabaseError as exc:
        log.warning("the duration of %s on %s was not recorded: %s", command, step.environment, exc)


@dataclass
class Failure:
    kind: str
    message: str


def _wait(job_id, env_name, deadline, clock, renew=lambda: None, *, command, app):
    """The job's return value, or a Failure saying why there is none. RENEW is called every couple of seconds.

    An answer counts only when its signed value names this very job, application, environment and command
    (exchange.channel.is_bound): a result or failure copied from another job, or one that does not verify, is
    refused and the wait goes on, for the real answer may still come; if none does, the failure says what was
    refused. Only RQ's results stream is read, never the ``result`` field of the job hash."""
    conn = command_redis()
    job = CommandJob.fetch(job_id, connection=conn, serializer=SignedJSONSerializer)
    expected = channel.binding(job_id, app, env_name, command)
    seen, refused = "0-0", None
    while True:
        renew()
        remaining = deadline - clock()
        if remaining <= 0:
            return _noting_refusal(_timed_out(job, env_name), refused, env_name)
        answers = conn.xread({Result.get_key(job_id): seen}, block=max(1, min(int(remaining), 2)) * 1000)
        for answer_id, fields in (answers[0][1] if answers else []):
            seen = answer_id
            answer, why = _answer(job_id, answer_id, fields, conn, expected, env_name)
            if why is None:
                return answer
            refused = why
            log.warning("refused an answer to job %s: %s", job_id, why)
        if answers:
            continue
        entry = registry.read(supervisor_redis()).get(env_name)
        if entry is None or entry.get("stopped_at") or not registry.is_alive(entry):
            return _noting_refusal(Failure(LOST, f"environment {env_name} went offline while running the command"),
                                   refused, env_name)


def _noting_refusal(failure, refused, env_name):
    """FAILURE, saying first that an answer was refused (REFUSED: why, or None): whichever way the wait ends, the
    operator learns that someone answered in that environment's place."""
    if refused is None:
        return failure
    return Failure(FAILED, f"refused an answer from environment {env_name} that was not for this command "
                           f"({refused}); {failure.message}")


def _answer(job_id, answer_id, fields, conn, expected, env_name):
    """``(answer, None)`` for an answer to the EXPECTED job (its return value, or a Failure), else ``(None, why)``."""
    try:
        result = Result.restore(job_id, answer_id.decode(), fields, connection=conn,
                                serializer=SignedJSONSerializer.expecting(env_name))
    except Exception as exc:  # BadSignature, not JSON, not even RQ's format: not written by that environment
        return None, f"it does not verify: {type(exc).__name__}"
    if result.type == Result.Type.SUCCESSFUL:
        if channel.is_bound(result.return_value, expected):
            return result.return_value, None
        return None, _foreign(result.return_value)
    failure = channel.open_failure(result.exc_string, env_name)
    if failure is None:
        return None, "a failure that does not verify"
    if not channel.is_bound(failure, expected):
        return None, _foreign(failure)
    return Failure(FAILED, _last_line(failure["error"]) or f"the command failed on {env_name}"), None


def _foreign(value):
    if not isinstance(value, dict) or not value.get("job_id"):
        return "signed for no job"
    return (f"signed for job {value['job_id']}: {value.get('command')} {value.get('app')} on "
            f"{value.get('environment')}")


def _timed_out(job, env_name):
    if job.get_status(refresh=True) == "queued":
        job.cancel()  # it must not run later, behind the operator's back (a worker refuses it as stale too)
        return Failure(TIMEOUT, f"no answer from environment {env_name} before the timeout: the command "
                                "did not start there and is cancelled")
    # Already running there: it cannot be taken back halfway, so say so; its outcome replaces this error
    # once the worker reports it.
    return Failure(TIMEOUT, f"no answer from environment {env_name} before the timeout: the command is "
                            "still running there, and its outcome will be shown when it ends")


def _last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _record_failure(placement, message):
    placement.state = contract.ERROR
    placement.error = message
    placement.traceback = ""
    placement.state_at = timezone.now()
    placement.save(update_fields=["state", "error", "traceback", "state_at"])
    runner.announce(placement.application.name)


def remove(application, drop_database=False, timeout=None, force=False):
    """Stop APPLICATION everywhere and delete it; its databases are kept unless DROP_DATABASE. Refuses (returns
    the failed Outcome) while an environment that hosts it is offline, so that no database is left behind
    unaccounted for; with FORCE, for environments that will never answer, nothing is sent to the offline ones
    (what it left there is not reachable) and it is removed from the online ones as usual."""
    with _held(application.name, wait=_lock_wait(timeout)) as renew:
        only = None
        if force:
            runner.sync_environments()  # which ones are offline as of now
            only = [p.environment.name for p in application.placements.select_related("environment")
                    if p.environment.is_online()]
        outcome = _run_locked(application, contract.REMOVE, timeout, None, drop_database, time.monotonic, renew,
                              only=only)
        if not outcome.ok:
            return outcome
        # Still under the lock: a start slipping in here would provision an application about to be deleted.
        with transaction.atomic():
            names = application.environment_names()
            # Environments it was leaving (apps.placements) too: their last reported states must not outlive it.
            names += list(application.removals.values_list("environment__name", flat=True))
            application.delete()
        runner.forget(application.name, names)
    return outcome


class RedisRunner:
    """How a supervisor runs lifecycle steps (APP_PROCESS_ADAPTER=remote): commands sent to the workers through the
    command channel, their outcome read back from Redis, the lock held in Redis across supervisor processes."""

    def held(self, app, wait):
        return _redis_lock(app, wait)

    def sync_environments(self):
        registry_mirror.sync(supervisor_redis())  # liveness as of now, not as of the controller's last pass

    def publish(self, application):
        # Workers refuse applications they do not find in the cache: make sure this one is there, current.
        cache.publish(supervisor_redis(), Application.objects.with_placements().get(pk=application.pk))

    def execute(self, placement, command, payload, deadline, clock, renew):
        """The worker's answer ({"state", "error", ...}), or a Failure saying why there is none."""
        env = placement.environment
        # The job expires when this operation stops waiting for it: a worker that picks it up later refuses it, so a
        # command answered as failed never runs behind the operator's back.
        expires_at = time.time() + max(0.0, deadline - clock())
        app = placement.application
        job_id = channel.enqueue(env.name, command, app.name, payload, expires_at=expires_at, generation=app.generation)
        return _wait(job_id, env.name, deadline, clock, renew, command=command, app=app.name)

    def refresh(self, placements):
        status_mirror.refresh(supervisor_redis(), placements)

    def announce(self, app):
        # No worker reported this one: say it, so that open pages re-read it now.
        with contextlib.suppress(redis.RedisError):
            events.publish(supervisor_redis(), events.APP, name=app)

    def forget(self, app, environments):
        r = supervisor_redis()
        cache.unpublish(r, app)
        status.forget(r, app, environments)


# Who runs the steps: a single instance (single/) puts its in-process runner here.
runner = RedisRunner()
