"""Hosted code for the fleet tests, written to a directory the worker processes get on PYTHONPATH: the Django app
``fleetnotes`` (a Note model, a JSON page at ``/apps/<name>/notes.json``, the management commands ``addnote`` and
``fleetcheck``), in a first version, and a second that adds a column and its migration, ``0002_priority``. That
migration refuses to run in an application holding a note titled ``nomigrate``; ``fleetcheck`` fails in one
holding a note titled ``broken``."""

import textwrap
from pathlib import Path

HOSTED = {"APP_HOSTED_APPS": "fleetnotes", "APP_HOSTED_URLCONF": "fleetnotes.urls"}

FILES = {
    "fleetnotes/__init__.py": "",
    "fleetnotes/apps.py": """
        from django.apps import AppConfig


        class FleetNotesConfig(AppConfig):
            name = "fleetnotes"
            default_auto_field = "django.db.models.BigAutoField"
        """,
    "fleetnotes/migrations/__init__.py": "",
    "fleetnotes/migrations/0001_initial.py": """
        from django.db import migrations, models


        class Migration(migrations.Migration):
            initial = True
            dependencies = []
            operations = [
                migrations.CreateModel("Note", [
                    ("id", models.BigAutoField(primary_key=True, serialize=False)),
                    ("title", models.CharField(max_length=100)),
                ]),
            ]
        """,
    "fleetnotes/management/__init__.py": "",
    "fleetnotes/management/commands/__init__.py": "",
    "fleetnotes/management/commands/addnote.py": """
        from django.core.management.base import BaseCommand

        from fleetnotes.models import Note


        class Command(BaseCommand):
            def add_arguments(self, parser):
                parser.add_argument("title")

            def handle(self, *args, title, **options):
                Note.objects.create(title=title)
                self.stdout.write(f"added {title}")
        """,
    "fleetnotes/management/commands/fleetcheck.py": """
        from django.core.management.base import BaseCommand, CommandError

        from fleetnotes.models import Note


        class Command(BaseCommand):
            def handle(self, *args, **options):
                titles = sorted(Note.objects.values_list("title", flat=True))
                self.stdout.write(f"notes: {', '.join(titles)}")
                if "broken" in titles:
                    raise CommandError("a note is broken")
        """,
}

V1 = {
    "fleetnotes/models.py": """
        from django.db import models


        class Note(models.Model):
            title = models.CharField(max_length=100)
        """,
    "fleetnotes/urls.py": """
        from django.http import JsonResponse
        from django.urls import path

        from .models import Note


        def notes(request):
            return JsonResponse({"notes": list(Note.objects.order_by("id").values("title"))})


        urlpatterns = [path("notes.json", notes)]
        """,
}

V2 = {
    "fleetnotes/models.py": """
        from django.db import models


        class Note(models.Model):
            title = models.CharField(max_length=100)
            priority = models.IntegerField(default=0)
        """,
    "fleetnotes/urls.py": """
        from django.http import JsonResponse
        from django.urls import path

        from .models import Note


        def notes(request):
            return JsonResponse({"notes": list(Note.objects.order_by("id").values("title", "priority"))})


        urlpatterns = [path("notes.json", notes)]
        """,
    "fleetnotes/migrations/0002_priority.py": """
        from django.db import migrations, models


        def refuse(apps, schema_editor):
            notes = apps.get_model("fleetnotes", "Note").objects.using(schema_editor.connection.alias)
            if notes.filter(title="nomigrate").exists():
                raise RuntimeError("this application holds a note that refuses the upgrade")


        class Migration(migrations.Migration):
            dependencies = [("fleetnotes", "0001_initial")]
            operations = [
                migrations.AddField("note", "priority", models.IntegerField(default=0)),
                migrations.RunPython(refuse, migrations.RunPython.noop),
            ]
        """,
}


def write(root, version):
    """The hosted code of VERSION (1 or 2) under ROOT; returns ROOT, for PYTHONPATH."""
    root = Path(root)
    for name, text in {**FILES, **(V1 if version == 1 else V2)}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root
