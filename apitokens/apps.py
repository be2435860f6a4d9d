from django.apps import AppConfig


class ApiTokensConfig(AppConfig):
    name = "apitokens"
    label = "apitokens"
    verbose_name = "App Supervisor: API tokens"
    default_auto_field = "django.db.models.BigAutoField"
