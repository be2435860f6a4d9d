from django.contrib import admin

from .models import Note


# Registered on Django's default admin site, as in any project: a worker's hosted admin takes the registrations of
# the apps it hosts from there.
@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ["title", "updated_at", "created_at"]
    search_fields = ["title", "body"]
    readonly_fields = ["created_at", "updated_at"]
