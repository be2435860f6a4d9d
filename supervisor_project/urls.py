from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from apps import api as apps_api
from environments import api as environments_api
from supervisor_project import api_auth, openapi
from supervisor_project.views import healthz

admin.site.site_header = "App Supervisor"
admin.site.site_title = "App Supervisor"
admin.site.index_title = "Environments and applications"

# The JSON API (DESIGN.md). Trailing slashes are optional, so curl users never meet a redirect; anything else
# under api/ answers a JSON 404, never an HTML page. /api/schema/ is the OpenAPI document of all of it.
api_patterns = [
    re_path(r"^schema/?$", openapi.schema_view, name="schema"),
    re_path(r"^environments/?$", environments_api.environment_list, name="environments"),
    re_path(r"^apps/?$", apps_api.app_collection, name="apps"),
    re_path(r"^apps/(?P<name>[^/]+)/?$", apps_api.app_detail, name="app"),
    re_path(r"^apps/(?P<name>[^/]+)/(?P<command>start|stop|restart)/?$", apps_api.app_command, name="app-command"),
    re_path(r"^(?P<rest>.*)$", api_auth.not_found),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]

if settings.APP_MODE != "worker":  # the API manages the supervisor's applications; a worker has none
    urlpatterns.append(path("api/", include((api_patterns, "api"))))
