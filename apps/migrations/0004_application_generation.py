import secrets

from django.db import migrations, models

from apps.models import new_generation


def fill(apps, schema_editor):
    """A distinct random value per existing application (a column default would give them all the same one)."""
    Application = apps.get_model("apps", "Application")
    rows = [Application(pk=pk, generation=secrets.token_hex(16))
            for pk in Application.objects.values_list("pk", flat=True)]
    Application.objects.bulk_update(rows, ["generation"], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('apps', '0003_placement_state_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='application',
            name='generation',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='application',
            name='generation',
            field=models.CharField(default=new_generation, editable=False, max_length=32),
        ),
    ]
