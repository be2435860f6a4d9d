"""Alerts: what ``runsupervisor`` tells operators when an environment changes status or an application fails on one.

``AlertState`` is the durable record of the last status alerted per subject; a transition is claimed by a conditional
UPDATE of it, so that it is alerted once whichever controller sees it, and across restarts. Each ``Alert`` gets one
``Delivery`` per channel (the webhooks of APP_ALERT_WEBHOOKS and the enabled ``AlertChannel`` rows), and each try of
a delivery is a ``DeliveryAttempt``, shown in the admin.
"""

from django.core.validators import URLValidator
from django.db import models
from django.utils import timezone

from exchange.contract import DEGRADED, OFFLINE, ONLINE

# Events (the "event" field of an alert, docs/architecture.md, "Operations endpoints").
ENVIRONMENT_ONLINE = "environment.online"
ENVIRONMENT_DEGRADED = "environment.degraded"
ENVIRONMENT_OFFLINE = "environment.offline"
ENVIRONMENT_FLAPPING = "environment.flapping"
PLACEMENT_ERROR = "placement.error"
# Sent by the admin's "send a test alert" action only.
TEST = "test"
EVENTS = (ENVIRONMENT_OFFLINE, ENVIRONMENT_ONLINE, ENVIRONMENT_DEGRADED, ENVIRONMENT_FLAPPING, PLACEMENT_ERROR, TEST)
ENVIRONMENT_EVENTS = {ONLINE: ENVIRONMENT_ONLINE, DEGRADED: ENVIRONMENT_DEGRADED, OFFLINE: ENVIRONMENT_OFFLINE}

# AlertState.status of a placement: in error, or back in a settled state since.
IN_ERROR = "error"
RECOVERED = "ok"

# Channel kinds.
WEBHOOK = "webhook"
EMAIL = "email"

# Delivery states.
PENDING = "pending"
SENT = "sent"
FAILED = "failed"


class AlertChannel(models.Model):
    """A channel added in the admin. The webhooks of APP_ALERT_WEBHOOKS are channels too, but they come from the
    environment and are not stored here (their deliveries name their URL)."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=[(WEBHOOK, "Webhook (POST of JSON)"), (EMAIL, "E-mail")],
                            default=WEBHOOK)
    url = models.URLField("URL", max_length=500, blank=True, validators=[URLValidator(schemes=["http", "https"])],
                          help_text="Webhooks: the http(s) address alerts are POSTed to, as JSON.")
    email = models.EmailField("e-mail address", blank=True,
                              help_text="E-mail: the address alerts are sent to (with Django's mail settings).")
    enabled = models.BooleanField(default=True, help_text="Disabled channels get no alerts (a test alert still "
                                                          "goes out).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def target(self):
        return self.url if self.kind == WEBHOOK else self.email

    def clean(self):
        # Only the field of its kind is kept, so that what the list shows is where alerts go.
        if self.kind == WEBHOOK:
            self.email = ""
        else:
            self.url = ""


class AlertState(models.Model):
    """The last status alerted for a subject: an environment (``app`` empty; online, degraded or offline), or an
    application on an environment (IN_ERROR or RECOVERED). Moved by the controller only, with a conditional
    UPDATE: the one whose UPDATE changes the row owns the transition and raises its alert."""

    environment = models.CharField(max_length=40)
    app = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10)
    changed_at = models.DateTimeField(default=timezone.now)
    # Since when an environment has been flapping (its changes are held, not sent), until it is steady again.
    flapping_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["environment", "app"], name="one_alert_state_per_subject")]

    def __str__(self):
        return f"{self.app}/{self.environment}: {self.status}" if self.app else f"{self.environment}: {self.status}"


class Alert(models.Model):
    event = models.CharField(max_length=30, choices=[(e, e) for e in EVENTS])
    environment = models.CharField(max_length=40, blank=True)
    app = models.CharField(max_length=40, blank=True)
    # The environment's new status, or the application's state on it.
    status = models.CharField(max_length=10, blank=True)
    message = models.TextField()
    at = models.DateTimeField(default=timezone.now)
    # Recorded, not sent: a change of an environment that is flapping (alerts.transitions). The admin lists it.
    held = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self):
        return f"{self.event}: {self.message}"

    def payload(self):
        """What webhooks receive (docs/architecture.md, "Operations endpoints"), plus the alert's id (receivers can
        drop a retried delivery they already have) and the status."""
        return {
            "event": self.event,
            "environment": self.environment or None,
            "app": self.app or None,
            "message": self.message,
            "at": self.at.isoformat(),
            "status": self.status or None,
            "id": self.pk,
        }


class Delivery(models.Model):
    """An alert to one channel: pending until sent, retried with backoff, failed after the last attempt."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    # None for the webhooks of APP_ALERT_WEBHOOKS, and for a channel deleted since.
    channel = models.ForeignKey(AlertChannel, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="deliveries")
    # Where the channel came from, as it was named then: "APP_ALERT_WEBHOOKS" or the channel's name.
    source = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=AlertChannel._meta.get_field("kind").choices)
    target = models.CharField(max_length=500)
    state = models.CharField(max_length=10, choices=[(PENDING, PENDING), (SENT, SENT), (FAILED, FAILED)],
                             default=PENDING)
    attempt_count = models.PositiveSmallIntegerField("attempts", default=0)
    # When the next attempt is due (a claimed delivery has it moved forward while it is being sent).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    result = models.TextField("last result", blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_due")]

    def __str__(self):
        return f"{self.alert.event} to {self.target}"



class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self):
        return f"attempt {self.number}: {'ok' if self.ok else self.error}"
