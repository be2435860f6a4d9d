from django.db import models


class ControllerState(models.Model):
    """One row: what the acting controller last saw, so that pages (which only read) can say how fresh they are
    and whether Redis answers."""

    holder = models.CharField(max_length=200, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    redis_error = models.TextField(blank=True)
    redis_error_since = models.DateTimeField(null=True, blank=True)

    @classmethod
    def current(cls):
        return cls.objects.filter(pk=1).first() or cls(pk=1)
