"""Per-user API tokens (docs/architecture.md, "JSON API"): ``Authorization: Bearer <token>`` with its user's
permissions. Only the SHA-256 of a token is stored; the token itself is shown once, when it is created."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

# Tells a per-user token apart from SUPERVISOR_API_TOKEN at a glance (and to secret scanners).
PREFIX = "appsup_"
# last_used_at is written at most this often per token, so a busy script does not write on every request.
LAST_USED_PRECISION = timedelta(minutes=1)


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))

    def for_token(self, token, now=None):
        """The usable token whose secret is TOKEN, with its user, or None."""
        if not token.startswith(PREFIX):
            return None
        return self.usable(now).select_related("user").filter(key_hash=digest(token)).first()


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens",
                             help_text="The token acts with this user's permissions, no more.")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. deploy-pipeline.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the token, to recognise it in a list: not enough to use it.
    hint = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["user", "name"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    def issue(self):
        """Give this token a new secret and return it: the only moment it can be seen."""
        token = PREFIX + secrets.token_urlsafe(32)
        self.key_hash = digest(token)
        self.hint = token[: len(PREFIX) + 4]
        return token

    def is_usable(self, now=None):
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def mark_used(self, now=None):
        """Record a use, at most once per LAST_USED_PRECISION (a conditional UPDATE: concurrent requests write
        once between them)."""
        now = now or timezone.now()
        stale = models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=now - LAST_USED_PRECISION)
        ApiToken.objects.filter(stale, pk=self.pk).update(last_used_at=now)
