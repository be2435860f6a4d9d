from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from api import auth as api_auth
from api import openapi
from apps import api as apps_api
from apps import logs_api, move_api, signin_api
from audit import api as audit_api
from environments import api as environments_api
from environments import drain_api
from fleet import api as fleet_api
from monitoring import overview
from monitoring import views as monitoring_views
from supervisor_project.views import favicon, healthz, readyz

admin.site.site_header = "App Supervisor"
admin.site.site_title = "App Supervisor"
admin.site.index_title = "Environments and applications"
# The index is an overview of the fleet (monitoring.overview) above Django's list of models.
admin.site.index_template = "admin/overview.html"
admin.site.index = overview.index(admin.site.index)

# The JSON API (docs/architecture.md, "JSON API"). Trailing slashes are optional, so curl users never meet a
# redirect; anything else under api/ answers a JSON 404, never an HTML page. /api/schema/ is the OpenAPI document of
# all of it.
api_patterns = [
    re_path(r"^schema/?$", openapi.schema_view, name="schema"),
    re_path(r"^environments/?$", environments_api.environment_list, name="environments"),
    re_path(r"^environments/(?P<name>[^/]+)/?$", environments_api.environment_detail, name="environment"),
    re_path(r"^environments/(?P<name>[^/]+)/drain/?$", drain_api.environment_drain, name="environment-drain"),
    re_path(r"^environments/(?P<name>[^/]+)/undrain/?$", drain_api.environment_undrain, name="environment-undrain"),
    re_path(r"^apps/?$", apps_api.app_collection, name="apps"),
    re_path(r"^apps/(?P<name>[^/]+)/?$", apps_api.app_detail, name="app"),
    re_path(r"^apps/(?P<name>[^/]+)/(?P<command>start|stop|restart)/?$", apps_api.app_command, name="app-command"),
    re_path(r"^apps/(?P<name>[^/]+)/move/?$", move_api.app_move, name="app-move"),
    re_path(r"^apps/(?P<name>[^/]+)/signin-link/?$", signin_api.app_signin_link, name="app-signin-link"),
    re_path(r"^audit/?$", audit_api.audit_list, name="audit"),
    re_path(r"^apps/(?P<name>[^/]+)/command/?$", fleet_api.app_management_command, name="app-management-command"),
    re_path(r"^upgrade/?$", fleet_api.upgrade_collection, name="upgrade"),
    re_path(r"^upgrades/(?P<upgrade_id>[^/]+)/?$", fleet_api.upgrade_detail, name="upgrade-detail"),
    re_path(r"^apps/(?P<name>[^/]+)/logs/?$", logs_api.app_logs, name="app-logs"),
    re_path(r"^(?P<rest>.*)$", api_auth.not_found),
]

urlpatterns = [
    # The bare address of the supervisor (typed, or linked from elsewhere): its site is the admin.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", monitoring_views.metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
]

if settings.APP_MODE != "worker":  # the API manages the supervisor's applications; a worker has none
    urlpatterns.append(path("api/", include((api_patterns, "api"))))
