import secrets

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from exchange import contract

STATE_CHOICES = [(s, s) for s in contract.RUNTIME_STATES]
DESIRED_CHOICES = [(s, s) for s in contract.DESIRED_STATES]
# The codename of the permission to start, stop and restart (and, later, move) an application: apps.operate_application.
OPERATE = "operate_application"
OPERATE_PERMISSION = f"apps.{OPERATE}"
# Taking, downloading and restoring an application's backups (apps.backups), and cloning one: apps.backup_application.
BACKUP = "backup_application"
BACKUP_PERMISSION = f"apps.{BACKUP}"


def drifted_placements():
    """The applications (``application_id``) with a placement whose mirrored state is not the desired one, or with
    a restart waiting (restart_pending_q).

    A union of one part per desired state, each the placements in any other state (found through the index on
    state) of applications wanting that one, rather than ``state <> application.desired_state``, which has no
    index to use: PostgreSQL joined all 100,000 placements to their applications for it (50 ms) to find none."""
    parts = [
        Placement.objects.order_by()
        .filter(application__desired_state=desired, state__in=[s for s in contract.RUNTIME_STATES if s != desired])
        .values("application_id")
        for desired in contract.DESIRED_STATES
    ]
    restarts = Placement.objects.order_by().filter(restart_pending_q()).values("application_id")
    return parts[0].union(*parts[1:], restarts)


def restart_pending_q():
    """The placements with a restart asked for while their environment was offline, not carried out yet."""
    return models.Q(restarts_asked__gt=models.F("restarts_done"))


class ApplicationQuerySet(models.QuerySet):
    def drifting(self):
        """Applications with a placement whose mirrored state is not the desired one: what the controller acts on.
        A semi-join, as in needing_attention."""
        return self.filter(pk__in=drifted_placements())

    def needing_attention(self, now=None):
        """What an operator should look at (as a Q, to filter or exclude): drift, an error, a placement on an
        environment that is not online (offline or degraded), or failed attempts of the controller.
        Application.needs_attention says the same of one application.

        A semi-join (``pk IN (troubled placements)``) rather than a correlated EXISTS: the database reads the
        placements once instead of once per application, which at 100,000 applications halves the time. The
        troubled placements are a union of parts that each have an index to use (see drifted_placements): in
        error, on an environment that is not online or degraded (usually few), drifted."""
        from environments.models import Environment

        failing = Placement.objects.order_by().filter(state=contract.ERROR).values("application_id")
        unwell = Environment.objects.order_by().filter(
            ~models.Q(pk__in=Environment.objects.online(now).values("pk")) | models.Q(web_ok=False))
        away = Placement.objects.order_by().filter(environment__in=unwell.values("pk")).values("application_id")
        troubled = drifted_placements().union(failing, away)
        return models.Q(pk__in=troubled) | models.Q(attempts__gt=0)

    def with_placements(self):
        """Placements and their environments in two queries, whatever the number of applications."""
        return self.prefetch_related(
            models.Prefetch("placements", queryset=Placement.objects.select_related("environment")),
            models.Prefetch("moves", queryset=Move.objects.filter(state=Move.ACTIVE).select_related(
                "source", "destination"), to_attr="active_moves"),
            "domains",
        )


def new_generation():
    """A random 128-bit token: a value no earlier application of the same name ever had."""
    return secrets.token_hex(16)


class Application(models.Model):
    name = models.CharField(max_length=40, unique=True)
    # Which application of this name this is: set once, on create, so an application removed and created again
    # under the same name is another one. Every command carries it and workers refuse a command issued for another
    # (a replayed remove must not drop the new application's database).
    generation = models.CharField(max_length=32, default=new_generation, editable=False)
    display_name = models.CharField(max_length=200, blank=True)
    desired_state = models.CharField(max_length=10, choices=DESIRED_CHOICES, default=contract.STOPPED)
    admin_username = models.CharField("initial admin username", max_length=150)
    # Only the hash ever leaves the form: it is what the worker stores for the initial superuser.
    admin_password_hash = models.CharField(max_length=256)
    environments = models.ManyToManyField("environments.Environment", through="Placement", related_name="applications")
    # Its share of each worker web process (workers.gate); blank: the worker's APP_APP_CONCURRENCY / APP_APP_TIMEOUT.
    concurrency = models.PositiveSmallIntegerField(
        "concurrent requests", null=True, blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(contract.MAX_APP_CONCURRENCY)],
        help_text="How many of its requests each worker web process runs at once (never more than its "
        "APP_WEB_THREADS); a few more wait, the others are answered 503. Blank: the worker's APP_APP_CONCURRENCY.")
    request_timeout = models.PositiveIntegerField(
        "request timeout (seconds)", null=True, blank=True, validators=[MaxValueValidator(contract.MAX_APP_TIMEOUT)],
        help_text="Past it, a request is answered 504 (0: never). Blank: the worker's APP_APP_TIMEOUT.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the controller (runsupervisor) only: how its work to reach the desired state goes.
    attempts = models.PositiveIntegerField("failed attempts", default=0,
                                           help_text="consecutive attempts of the controller that failed")
    next_attempt_at = models.DateTimeField("next retry", null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    waiting_for = models.CharField(max_length=500, blank=True,
                                   help_text="why the controller is not acting now (an offline environment, say)")
    # Backups (apps.backups): blank/None for the supervisor's APP_BACKUP_SCHEDULE and APP_BACKUP_KEEP.
    backup_schedule = models.CharField(
        max_length=100, blank=True,
        help_text="A cron expression (e.g. 0 3 * * *, in UTC) for its scheduled backups, or \"off\". Blank: the "
        "supervisor's APP_BACKUP_SCHEDULE.")
    backup_keep = models.PositiveIntegerField(
        "backups kept", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="How many of its newest backups are kept (older ones are deleted after each backup). Blank: the "
        "supervisor's APP_BACKUP_KEEP.")
    is_template = models.BooleanField(
        "template", default=False,
        help_text="Offered in the add form: a new application can start from a fresh backup of its data.")

    objects = ApplicationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "application"
        # Starting, stopping and restarting change no field an edit could, and an editor of display names need not
        # be able to take applications down: a permission of its own, required by the admin and the API alike.
        permissions = [(OPERATE, "Can start, stop and restart application"),
                       (BACKUP, "Can back up, restore and clone application")]

    def __str__(self):
        return self.name

    def ordered_placements(self):
        """Placements in start order; uses the prefetch cache when there is one."""
        return sorted(self.placements.all(), key=lambda p: p.position)

    def environment_names(self):
        return [p.environment.name for p in self.ordered_placements()]

    def drift(self, now=None):
        """Placements whose observed state is not the desired one (an offline environment's counts: unknown)."""
        return [p for p in self.ordered_placements() if p.display_state(now) != self.desired_state]

    def needs_attention(self, now=None):
        """ApplicationQuerySet.needing_attention, for one application with its placements loaded."""
        return bool(self.attempts) or any(
            p.state != self.desired_state or p.state == contract.ERROR or p.restart_pending
            or p.environment.status(now) != contract.ONLINE
            for p in self.ordered_placements()
        )

    def cache_entry(self, leaving=()):
        """What workers and the proxy read from Redis (the configuration cache). LEAVING: the environments it is
        leaving (Removal), where only the remove command is still accepted."""
        return {
            "name": self.name,
            "display_name": self.display_name or self.name,
            "environments": self.environment_names(),
            contract.LEAVING: list(leaving),
            "desired_state": self.desired_state,
            "generation": self.generation,
            "concurrency": self.concurrency,  # None: the worker's default
            "request_timeout": self.request_timeout,
            "domains": self.domain_names(),
            **self._moving_entry(),
        }

    def domain_names(self):
        """Its custom domains (Domain), sorted; uses the prefetch cache when there is one."""
        return sorted(d.name for d in self.domains.all())

    def _moving_entry(self):
        """``{"moving": {"from", "to"}}`` while a move of this application runs (apps.moves), else nothing: the
        source refuses writes, and both take the move's commands (the destination before it is placed there)."""
        active = getattr(self, "active_moves", None)
        if active is None:
            active = self.moves.filter(state=Move.ACTIVE).select_related("source", "destination")
        move = next(iter(active), None)
        return {"moving": {"from": move.source.name, "to": move.destination.name}} if move else {}


class Placement(models.Model):
    """An application on one environment, with the last runtime state the environment reported."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="placements")
    environment = models.ForeignKey("environments.Environment", on_delete=models.PROTECT, related_name="placements")
    position = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=10, choices=STATE_CHOICES, default=contract.STOPPED)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    state_at = models.DateTimeField(null=True, blank=True)
    # Restarts asked for while the environment was offline (a generation: it only grows), and the last of them
    # the controller carried out. A restart's desired state is the one it had (running), so without this the
    # controller would see nothing to do once the environment is back and the restart would be lost.
    restarts_asked = models.PositiveIntegerField(default=0)
    restarts_done = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["application", "position"]
        constraints = [
            models.UniqueConstraint(fields=["application", "environment"], name="one_placement_per_environment"),
        ]
        # What finds the few placements that need work or attention among 100,000 (drifted_placements); the
        # second holds only the placements with a restart waiting, so finding them costs nothing when none does.
        indexes = [
            models.Index(fields=["state", "application"], name="placement_state"),
            models.Index(fields=["application"], name="placement_restart_pending",
                         condition=models.Q(restarts_asked__gt=models.F("restarts_done"))),
        ]

    def __str__(self):
        return f"{self.application.name} on {self.environment.name}"

    @property
    def restart_pending(self):
        return self.restarts_asked > self.restarts_done

    def display_state(self, now=None):
        """The state to show: a stale value from an offline environment would mislead, so it is unknown."""
        return self.state if self.environment.is_online(now) else contract.UNKNOWN

    def badge_state(self, now=None):
        """What its badge says: the state shown, except that running on a degraded environment is "degraded", as
        the proxy refuses it there (its web does not answer); a green "running" would contradict the proxy."""
        shown = self.display_state(now)
        if shown == contract.RUNNING and self.environment.status(now) == contract.DEGRADED:
            return contract.DEGRADED
        return shown


class Removal(models.Model):
    """An environment an application has left (its environments were changed) where it is still to be removed: the
    remove command is sent there as soon as the environment is online, by the operation that changed the
    environments or, when that found it offline or failed, by the controller (controller.loop). Its database there is
    kept unless DROP_DATABASE."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="removals")
    # An environment forgotten for good takes its pending removals with it: nothing can be removed there any more.
    environment = models.ForeignKey("environments.Environment", on_delete=models.CASCADE, related_name="removals")
    drop_database = models.BooleanField(default=False)
    requested_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["application", "environment__name"]
        constraints = [
            models.UniqueConstraint(fields=["application", "environment"], name="one_removal_per_environment"),
        ]

    def __str__(self):
        return f"{self.application.name} leaving {self.environment.name}"


class Move(models.Model):
    """One move of an application from an environment to another with its database (apps.moves): what it is doing
    (STEP), how it ended, and why when it failed. At most one is ACTIVE per application."""

    ACTIVE, DONE, FAILED = "active", "done", "failed"
    STATES = [(s, s) for s in (ACTIVE, DONE, FAILED)]

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="moves")
    source = models.ForeignKey("environments.Environment", on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey("environments.Environment", on_delete=models.CASCADE, related_name="+")
    drop_database = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=STATES, default=ACTIVE)
    step = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    # Bytes and SHA-256 of the dump that was carried.
    size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["application"], condition=models.Q(state="active"),
                                    name="one_active_move_per_application"),
        ]

    def __str__(self):
        return f"{self.application.name}: {self.source.name} → {self.destination.name} ({self.state})"


def validate_domain(value):
    """A custom domain: a DNS name, neither under APP_APPS_DOMAIN (those are the applications' own hosts) nor one
    of APP_SUPERVISOR_HOSTS."""
    from django.conf import settings
    from django.core.exceptions import ValidationError

    from supervisor_project.config import is_domain_name

    if value != value.strip().lower().rstrip(".") or not is_domain_name(value):
        raise ValidationError(f"{value!r} is not a domain name in lower case, e.g. crm.example.com.")
    if settings.APP_APPS_DOMAIN and (value == settings.APP_APPS_DOMAIN
                                     or value.endswith("." + settings.APP_APPS_DOMAIN)):
        raise ValidationError(f"{value} is under APP_APPS_DOMAIN ({settings.APP_APPS_DOMAIN}), where every "
                              "application already has its own host: give a domain outside it.")
    if value in settings.APP_SUPERVISOR_HOSTS:
        raise ValidationError(f"{value} is one of the supervisor's own hosts (APP_SUPERVISOR_HOSTS).")


class Domain(models.Model):
    """A custom domain an application answers at (with APP_APPS_DOMAIN set), besides <name>.<APP_APPS_DOMAIN>.
    One application per domain: the name is unique across applications."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="domains")
    name = models.CharField("domain", max_length=253, unique=True, validators=[validate_domain],
                            help_text="e.g. crm.example.com: point its DNS at the supervisor (or at the nginx "
                            "export) and list it in the workers' ALLOWED_HOSTS")

    class Meta:
        ordering = ["name"]
        verbose_name = "custom domain"

    def __str__(self):
        return self.name
class Backup(models.Model):
    """A backup of an application's database (apps.backups): an engine-native dump stored through the ``backups``
    storage. A row exists only once its bytes are stored whole, so every listed backup is complete; SHA256 is of
    those bytes and is checked again before a restore."""

    MANUAL, SCHEDULED, SAFETY = "manual", "scheduled", "safety"
    KINDS = [(k, k) for k in (MANUAL, SCHEDULED, SAFETY)]

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="backups")
    # The environment it was taken on, by name: it outlives the environment.
    environment = models.CharField(max_length=40)
    engine = models.CharField(max_length=20)
    kind = models.CharField(max_length=10, choices=KINDS, default=MANUAL)
    file = models.CharField("stored as", max_length=300)
    size = models.BigIntegerField()
    sha256 = models.CharField("SHA-256", max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.application.name} backup {self.pk} ({self.created_at:%Y-%m-%d %H:%M:%S})"


class Restore(models.Model):
    """One restore of an application's data from a backup (apps.backups.restore): the step it is at while it runs
    (what pages and the API show live), and how it ended. Restores refused before anything was done leave none."""

    ACTIVE, DONE, FAILED = "active", "done", "failed"
    STATES = [(s, s) for s in (ACTIVE, DONE, FAILED)]

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="restores")
    backup = models.ForeignKey(Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    safety = models.ForeignKey(Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    environments = models.JSONField(default=list)
    state = models.CharField(max_length=10, choices=STATES, default=ACTIVE)
    step = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]

    def __str__(self):
        return f"{self.application.name}: restore {self.pk} ({self.state})"


class BackupSlot(models.Model):
    """A scheduled backup's slot (a time its cron expression names), claimed by inserting this row: whichever
    controller inserts it takes the backup, once per slot. ERROR: why it failed, "" when it did not."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="backup_slots")
    slot = models.DateTimeField()
    claimed_by = models.CharField(max_length=200, blank=True)
    backup = models.ForeignKey(Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["application", "slot"], name="one_backup_per_slot")]
