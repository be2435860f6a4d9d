"""The worker's side of the command channel (exchange.channel): a worker that refuses what it must before RQ
imports the function a job names.
"""

import time

from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker

from exchange import contract


def refusal(job, environment, is_placed, clock=time.time):
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
    # The sender stopped waiting at expires_at and reported the command as failed: running it now would act
    # behind the operator's back. (Jobs from senders older than expires_at carry none, and are run.)
    expires_at = kwargs.get("expires_at")
    if expires_at is not None:
        if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            return f"refused: expires_at {expires_at!r} is not a time"
        late = clock() - expires_at
        if late > 0:
            return f"refused: the command is stale, its sender stopped waiting {late:.0f} s ago"
    app = kwargs.get("app")
    if command != contract.PING and not is_placed(app):
        return f"refused: application {app!r} is not placed on environment {environment!r}"
    return None


class CommandWorker(SimpleWorker):
    """Runs jobs in this process (no fork: the agent keeps its database connections), allowlist first."""

    def __init__(self, *args, environment, is_placed, on_refusal=None, **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)
        self.environment = environment
        self.is_placed = is_placed
        self.on_refusal = on_refusal  # (job_id, reason) -> None: the agent shows its last refusal

    def perform_job(self, job, queue, execution):
        reason = refusal(job, self.environment, self.is_placed)
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
