"""Drop the rows made of registrations that never verified.

The mirror used to make a row for every name in Redis whose registration did not verify (environments.mirror now
only counts those): anyone who could write to Redis made thousands, and every page and scrape paid for them. Such a
row never had a verified registration, so it has no address; one that hosts nothing goes. A real environment whose
registration was overwritten keeps its row (it has its address), as does any row with placements.
"""

from django.db import migrations


def drop_rejected_rows(apps, schema_editor):
    Environment = apps.get_model("environments", "Environment")
    Environment.objects.filter(url="", placements__isnull=True).exclude(rejected="").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("environments", "0004_environment_fillfactor"),
        ("apps", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(drop_rejected_rows, migrations.RunPython.noop, elidable=True),
    ]
