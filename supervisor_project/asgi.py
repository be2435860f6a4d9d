import os

from django.core.asgi import get_asgi_application

from supervisor_project.config import exit_on_config_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_project.settings")
# daphne imports this module at start, so this is where its process first reads the configuration.
with exit_on_config_error():
    django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

if settings.APP_MODE == "worker":
    from workers.serving import build
elif settings.APP_MODE == "supervisor":
    from proxy.asgi import build
else:  # a single instance hosts its applications itself (single/)
    from single.serving import build

application = build(django_application)
