"""URLconf of a worker outside /apps/ (settings.ROOT_URLCONF with APP_MODE=worker).

Hosted applications are mounted by workers.hosting; the supervisor's admin and API are not served here.
"""

from django.urls import path

from supervisor_project.views import favicon, healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("favicon.ico", favicon, name="favicon"),
]
