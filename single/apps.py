from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


class SingleConfig(AppConfig):
    """A single instance (APP_MODE unset): the supervisor's admin and API and the hosting of applications in one
    process, on one environment, without Redis. The only app that imports both sides: it plugs the in-process
    adapters into the seams each side leaves for it (single.adapters)."""

    name = "single"
    verbose_name = "App Supervisor: single instance"

    def ready(self):
        if settings.APP_MODE != "":
            return
        from . import adapters, environment

        adapters.install()
        post_migrate.connect(environment.after_migrate, dispatch_uid="single-local-environment")
