"""URLconf of every hosted application, below its mount point /apps/<name>/ (set per request by
workers.hosting.HostedApplicationMiddleware).

``admin/`` is the hosted admin. The operator's own URLconf (APP_HOSTED_URLCONF) is included at the root after it,
so the admin wins a clash; the root itself, unless the operator's URLconf serves it, leads to the admin.

Built once, at import, from the settings (which do not change while a process runs). The middleware imports this
module when the worker web starts, so an unusable APP_HOSTED_URLCONF stops it there rather than failing requests.
"""

from importlib import import_module

from django.conf import settings
from django.urls import include, path
from django.views.generic import RedirectView

from supervisor_project.config import ConfigError

from .hosted_admin import site
from .signin import operator_signin


def operator_patterns(dotted_path):
    """The operator's URLconf module, once it is known to have urlpatterns."""
    module = import_module(dotted_path)
    if not hasattr(module, "urlpatterns"):
        raise ConfigError([f"APP_HOSTED_URLCONF={dotted_path!r} has no urlpatterns; name a URLconf module, one that "
                           "defines urlpatterns, e.g. samples.notes.urls"])
    return include(module)


# The supervisor's one-time sign-in links (workers/signin.py), before the operator's URLconf so that none shadows it.
SIGNIN_PATH = "_appsup/signin/"
urlpatterns = [path("admin/", site.urls), path(SIGNIN_PATH, operator_signin, name="appsup-signin")]
if settings.APP_HOSTED_URLCONF:
    urlpatterns.append(path("", operator_patterns(settings.APP_HOSTED_URLCONF)))
urlpatterns.append(path("", RedirectView.as_view(pattern_name="admin:index")))
