from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    label = "fleet"
    verbose_name = "App Supervisor: fleet upgrades"
    default_auto_field = "django.db.models.BigAutoField"
