"""What this worker itself remembers, in its own (``default``) database, never in a hosted application's."""

from django.db import models


class HostedState(models.Model):
    """The last state this worker reported for one of its applications (workers.commands._report).

    Redis holds the reported states for everyone to read, but Redis may lose them (restart, FLUSHALL); the agent
    then publishes these again, with their original times, instead of re-running any start.
    """

    app = models.CharField(max_length=40, unique=True)
    state = models.CharField(max_length=16)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    at = models.FloatField()

    class Meta:
        ordering = ["app"]

    def __str__(self):
        return f"{self.app}: {self.state}"


class ExecutedCommand(models.Model):
    """A command job this worker ran, kept until the command expires (after which it is refused as stale anyway),
    so that the same signed job pushed again is refused as a replay."""

    job_id = models.CharField(max_length=200, unique=True)
    expires_at = models.FloatField(db_index=True)

    def __str__(self):
        return self.job_id
