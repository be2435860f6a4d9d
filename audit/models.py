"""The audit log (docs/architecture.md, "Audit log"): who did what to what, when, with which outcome.

Append-only: an entry is never changed, and deleted only by the retention prune (``Entry.objects.prune``, the
controller's step, after ``APP_AUDIT_DAYS``). The model refuses ``save()`` of an existing entry, ``delete()``,
and a queryset's ``update()`` and ``delete()``; on PostgreSQL a trigger refuses UPDATE, and DELETE outside the
prune, for whoever reaches the table through SQL (migration ``0001_audit_entries``). The admin shows it read-only.
"""

from datetime import timedelta

from django.db import connection, models, transaction
from django.utils import timezone

from . import actions

# The PostgreSQL trigger lets a DELETE through only when the transaction set this (the prune does).
PRUNE_SETTING = "appsup.audit_prune"
# Rows deleted per prune step: one bounded statement, then the controller's loop goes on.
PRUNE_BATCH = 1000


class AppendOnly(Exception):
    """An attempt to change or delete an audit entry."""


APPEND_ONLY = "audit entries are append-only: they are never changed, and deleted only by the retention prune"


class EntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly(APPEND_ONLY)

    def delete(self):
        raise AppendOnly(APPEND_ONLY)

    def prune(self, now=None, days=90, batch=None):
        """Delete up to BATCH (default PRUNE_BATCH) entries older than DAYS days before NOW. Returns how many it
        deleted."""
        batch = PRUNE_BATCH if batch is None else batch
        cutoff = (now or timezone.now()) - timedelta(days=days)
        pks = list(self.model.objects.filter(at__lt=cutoff).order_by("pk").values_list("pk", flat=True)[:batch])
        if not pks:
            return 0
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config(%s, 'on', true)", [PRUNE_SETTING])
            deleted, _ = models.QuerySet.delete(self.model.objects.filter(pk__in=pks))
        return deleted


class Entry(models.Model):
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=20, choices=[(k, k) for k in actions.ACTOR_KINDS])
    actor = models.CharField(max_length=200, blank=True, db_index=True,
                             help_text="Username; token name and owner; controller id; OS user and command.")
    action = models.CharField(max_length=80, db_index=True)
    target = models.CharField(max_length=200, blank=True, db_index=True, help_text="e.g. application:crm")
    parameters = models.JSONField(default=dict, blank=True, help_text="What was asked, secrets removed.")
    outcome = models.CharField(max_length=10, choices=[(o, o) for o in actions.OUTCOMES], db_index=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The HTTP status answered.")
    detail = models.TextField(blank=True, help_text="The error or refusal, as answered.")
    request_id = models.CharField(max_length=100, blank=True, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address.")

    objects = EntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self):
        return f"{self.actor_kind} {self.actor}: {self.action} {self.target} ({self.outcome})"

    def save(self, *args, **kwargs):
        if self.pk is not None or kwargs.get("force_update"):
            raise AppendOnly(APPEND_ONLY)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly(APPEND_ONLY)

    def as_json(self):
        return {
            "id": self.pk,
            "at": self.at.isoformat(),
            "actor_kind": self.actor_kind,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "parameters": self.parameters,
            "outcome": self.outcome,
            "status": self.status,
            "detail": self.detail,
            "request_id": self.request_id,
            "address": self.address,
        }
