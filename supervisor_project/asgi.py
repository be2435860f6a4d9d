import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_project.settings")
django_application = get_asgi_application()

# HTTP only for now; WebSocket routes for hosted applications join here through channels' ProtocolTypeRouter.
application = django_application
