import math

from django.db import models
from django.db.models import F

# Upper bounds (seconds) of the command-duration histogram: a stop takes well under a second, a first start migrates a
# database (seconds), a slow one waits for the shared database or times out (minutes).
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)


class CommandDurationQuerySet(models.QuerySet):
    def observe(self, command, environment, outcome, seconds):
        """Count one lifecycle step of COMMAND on ENVIRONMENT that ended with OUTCOME after SECONDS. One UPDATE once
        the series exists; concurrent observers (the web and runsupervisor) never lose a count."""
        series = self.filter(command=command, environment=environment, outcome=outcome)
        if series.filter(le__gte=seconds).update(count=F("count") + 1, seconds=F("seconds") + seconds):
            return
        # A new series: whoever inserts first wins, the other's rows are ignored, and both then count.
        self.bulk_create(
            [self.model(command=command, environment=environment, outcome=outcome, le=le) for le in BUCKETS],
            ignore_conflicts=True,
        )
        series.filter(le__gte=seconds).update(count=F("count") + 1, seconds=F("seconds") + seconds)


class CommandDuration(models.Model):
    """One bucket of the command-duration histogram: how many lifecycle steps (one command on one environment) of
    COMMAND on ENVIRONMENT ended with OUTCOME within LE seconds, and how long they took in all. The +Inf bucket
    counts every step.

    Kept in the supervisor's database rather than in process memory because steps run in two processes, the web
    (an operator's command) and runsupervisor (the controller's), which may be on different machines, while
    /metrics is served by the web, which reads both from here. Counts only grow, as Prometheus expects."""

    command = models.CharField(max_length=20)
    environment = models.CharField(max_length=40)
    outcome = models.CharField(max_length=20)
    le = models.FloatField("at most (seconds)")
    count = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField("total seconds", default=0.0)

    objects = CommandDurationQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["command", "environment", "outcome", "le"], name="one_bucket_per_series"),
        ]

    def __str__(self):
        return f"{self.command} on {self.environment} ({self.outcome}) <= {self.le} s: {self.count}"
