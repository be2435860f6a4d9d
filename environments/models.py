from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from exchange.contract import DEGRADED, DRAINED, DRAINING, OFFLINE, ONLINE


def single_environment():
    """The name of a single instance's own environment (APP_MODE unset), which is online while the process serves
    (it is this process); None in a supervisor, where every environment is a worker that heartbeats."""
    return settings.ENVIRONMENT_NAME if settings.APP_MODE == "" else None


def online_since(now=None):
    """Heartbeats at or after this instant count as alive."""
    return (now or timezone.now()) - timedelta(seconds=settings.APP_HEARTBEAT_TIMEOUT)


def online_q(now=None):
    """The environments online at NOW, as a condition on their own columns (Environment.is_online in SQL)."""
    alive = models.Q(rejected="", stopped_at__isnull=True, last_heartbeat_at__gte=online_since(now))
    local = single_environment()
    return alive | models.Q(name=local) if local else alive


def drain_refusal(names):
    """Why none of the environments NAMES may take a new placement ("" when all may): drained or draining ones
    (environments.drain) may not."""
    draining = list(Drain.objects.filter(environment__name__in=names).order_by("environment__name")
                    .values_list("environment__name", flat=True))
    if not draining:
        return ""
    return (f"Environment {', '.join(draining)} is out of service (drained or being drained): it takes no new "
            "application.")


class EnvironmentQuerySet(models.QuerySet):
    def online(self, now=None):
        return self.filter(online_q(now))

    def offline(self, now=None):
        return self.exclude(pk__in=self.online(now).values("pk"))


class Environment(models.Model):
    """A worker environment, as it registered itself through Redis (mirrored here by environments.registry)."""

    name = models.SlugField(max_length=40, unique=True)
    url = models.URLField("URL", max_length=500)
    proxy_url = models.URLField("proxy URL", max_length=500, blank=True)
    version = models.CharField(max_length=50, blank=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set by a graceful stop, so the environment is offline at once rather than after the timeout.
    stopped_at = models.DateTimeField(null=True, blank=True)
    # What the agent observes of its own web process: False while it does not answer (degraded), with why.
    web_ok = models.BooleanField("web answers", null=True, blank=True)
    problem = models.TextField(blank=True)
    # The last command the agent refused (malformed, stale, not allowed), and when.
    refusal = models.TextField("last refused command", blank=True)
    refusal_at = models.DateTimeField(null=True, blank=True)
    # Why the entry in Redis was not taken (not signed with a key enrolled for it, malformed): never online, never
    # a proxy target, until its worker registers again.
    rejected = models.TextField(blank=True)
    # The Ed25519 public keys (exchange.keys) its entries must be signed with: enrolled by the operator (two during
    # a rotation), published to Redis by the supervisor (environments.enrollment).
    public_keys = models.JSONField("public keys", default=list, blank=True)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def target_url(self):
        """Where the supervisor reaches this environment."""
        return self.proxy_url or self.url

    def is_online(self, now=None):
        if self.name == single_environment():
            return True
        return (
            not self.rejected
            and self.stopped_at is None
            and self.last_heartbeat_at is not None
            and self.last_heartbeat_at >= online_since(now)
        )

    @property
    def drain_state(self):
        """None in service, else DRAINING (applications still to move away) or DRAINED."""
        drain = self.drain_or_none
        if drain is None:
            return None
        return DRAINED if drain.drained_at is not None else DRAINING

    @property
    def drain_or_none(self):
        try:
            return self.drain
        except Drain.DoesNotExist:
            return None

    @property
    def drain_left(self):
        drain = self.drain_or_none
        return (drain.left or {}) if drain is not None else {}

    def status(self, now=None):
        """ONLINE, DEGRADED (commands run, the proxy does not route there) or OFFLINE."""
        if not self.is_online(now):
            return OFFLINE
        return DEGRADED if self.web_ok is False else ONLINE

    def status_reason(self, now=None):
        status = self.status(now)
        if status == OFFLINE:
            return self.offline_reason(now)
        if status == DEGRADED:
            return f"environment {self.name} is degraded: {self.problem or 'its web process does not answer'}"
        return ""

    def offline_reason(self, now=None):
        if self.rejected:
            return f"environment {self.name} is offline: {self.rejected} (rejected)"
        if self.stopped_at is not None:
            return f"environment {self.name} is offline: its worker stopped at {self.stopped_at:%Y-%m-%d %H:%M:%S} UTC"
        if self.last_heartbeat_at is None:
            return f"environment {self.name} is offline: it has never sent a heartbeat"
        age = int(((now or timezone.now()) - self.last_heartbeat_at).total_seconds())
        return (
            f"environment {self.name} is offline: last heartbeat {age} s ago "
            f"(timeout {settings.APP_HEARTBEAT_TIMEOUT} s)"
        )


class Drain(models.Model):
    """An environment taken out of service (environments.drain): asked for at, emptied at, and each application it
    could not move away, with why. While there is one, the environment takes no new placement. A row of its own
    rather than columns of Environment: the registry's mirror writes environments in bulk, and SQLite's limit of
    999 parameters a query makes every column cost it queries."""

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, primary_key=True,
                                       related_name="drain")
    requested_at = models.DateTimeField(default=timezone.now)
    drained_at = models.DateTimeField(null=True, blank=True)
    left = models.JSONField(default=dict, blank=True)
