from django.db import models
from django.db.models import Q
from django.urls import reverse


class NoteQuerySet(models.QuerySet):
    def search(self, text):
        """The notes whose title or body contains every word of TEXT, in any case; all of them for no words."""
        notes = self
        for word in text.split():
            notes = notes.filter(Q(title__icontains=word) | Q(body__icontains=word))
        return notes


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = NoteQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("notes:edit", args=[self.pk])

    def as_json(self):
        return {
            "id": self.pk,
            "title": self.title,
            "body": self.body,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "url": self.get_absolute_url(),
        }
