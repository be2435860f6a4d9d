from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "App Supervisor: environments"

    def ready(self):
        from supervisor_project import checks  # noqa: F401  (registers the project's system checks)
