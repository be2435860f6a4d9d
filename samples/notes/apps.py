from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "samples.notes"
    verbose_name = "Notes"
    default_auto_field = "django.db.models.BigAutoField"
