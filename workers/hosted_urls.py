"""URLconf of every hosted application, below its mount point /apps/<name>/ (set per request by
workers.hosting.HostedApplicationMiddleware)."""

from django.urls import path
from django.views.generic import RedirectView

from .hosted_admin import site

urlpatterns = [
    path("admin/", site.urls),
    path("", RedirectView.as_view(pattern_name="admin:index")),
]
