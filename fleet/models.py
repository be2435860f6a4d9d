"""Fleet upgrades (docs/architecture.md, "Fleet upgrades"): what each environment reports its applications lack
(PendingMigrations, mirrored from Redis by the controller), and each upgrade asked for with one step per
(application, environment) it migrates.

Applications and environments are named, not referenced: an upgrade's record outlives an application deleted
meanwhile, and a report may arrive for a placement the database does not have yet.
"""

from django.db import models

# An upgrade's state.
RUNNING, DONE, FAILED = "running", "done", "failed"
UPGRADE_STATES = (RUNNING, DONE, FAILED)
# A step's state: waiting for its turn, taking the pre-upgrade backup, migrating (the command is with the worker),
# then done or failed.
WAITING, BACKING_UP, MIGRATING = "waiting", "backing_up", "migrating"
STEP_STATES = (WAITING, BACKING_UP, MIGRATING, DONE, FAILED)
ACTIVE_STEP_STATES = (WAITING, BACKING_UP, MIGRATING)


class PendingMigrations(models.Model):
    app = models.CharField(max_length=40)
    environment = models.CharField(max_length=40)
    migrations = models.JSONField(default=list)
    count = models.PositiveIntegerField(default=0, db_index=True)
    version = models.CharField(max_length=50, blank=True)
    reported_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "environment"], name="pending_migrations_once")]
        verbose_name_plural = "pending migrations"

    def __str__(self):
        return f"{self.app} on {self.environment}: {self.count} pending"


class Upgrade(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    asked_by = models.CharField(max_length=150, blank=True)
    # The applications asked for; empty: every application that needed it.
    apps = models.JSONField(default=list, blank=True)
    automatic = models.BooleanField(default=False)
    state = models.CharField(max_length=16, default=RUNNING, choices=[(s, s) for s in UPGRADE_STATES])

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"upgrade {self.pk} ({self.state})"


class UpgradeStep(models.Model):
    upgrade = models.ForeignKey(Upgrade, related_name="steps", on_delete=models.CASCADE)
    app = models.CharField(max_length=40)
    environment = models.CharField(max_length=40, db_index=True)
    state = models.CharField(max_length=16, default=WAITING, db_index=True,
                             choices=[(s, s) for s in STEP_STATES])
    # Reported pending when the upgrade was asked for, and the version of the code it migrates to.
    migrations = models.JSONField(default=list)
    version = models.CharField(max_length=50, blank=True)
    applied = models.JSONField(default=list)
    backup = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    job_id = models.CharField(max_length=200, blank=True)
    deadline = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.app} on {self.environment}: {self.state}"
