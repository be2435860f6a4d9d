from django.conf import settings
from django.core import checks

from .config import INSECURE_SECRET_KEY


@checks.register(checks.Tags.security)
def secret_key_is_set(app_configs, **kwargs):
    """Without SECRET_KEY every install shares one public key, so anyone could forge a session."""
    if settings.SECRET_KEY == INSECURE_SECRET_KEY and settings.APP_MODE:
        return [
            checks.Warning(
                "SECRET_KEY is not set: sessions and CSRF tokens are signed with a public development key.",
                hint="Set SECRET_KEY to a long random value (the same on every process of one role).",
                id="appsup.W001",
            )
        ]
    return []
