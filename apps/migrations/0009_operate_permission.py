from django.db import migrations

OPERATE = "operate_application"


def keep_operators(apps, schema_editor):
    """Who could start, stop and restart before (change permission) keeps being able to: the permission is created
    here instead of after migrating, so it can be granted to the same users and groups."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label="apps", model="application")
    operate, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=OPERATE, defaults={"name": "Can start, stop and restart application"}
    )
    change = Permission.objects.filter(content_type=content_type, codename="change_application").first()
    if change is None:
        return
    for group in change.group_set.all():
        group.permissions.add(operate)
    for user in change.user_set.all():
        user.user_permissions.add(operate)


class Migration(migrations.Migration):
    dependencies = [
        ("apps", "0008_moves"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="application",
            options={
                "ordering": ["name"],
                "permissions": [(OPERATE, "Can start, stop and restart application")],
                "verbose_name": "application",
            },
        ),
        migrations.RunPython(keep_operators, migrations.RunPython.noop),
    ]
