"""The admin site of a hosted application: the hosted Django apps' models only, titled with the application's name.

One site object serves every hosted application; the request says which (its database is chosen by the router).
"""

from django.contrib import admin
from django.urls import get_script_prefix

from .routing import hosted_labels


class HostedAdminSite(admin.AdminSite):
    index_title = "Site administration"

    def each_context(self, request):
        context = super().each_context(request)
        view = getattr(request, "hosted_app", None)
        if view is not None:
            title = view.config.get("display_name") or view.name
            context["site_header"] = title
            context["site_title"] = title
            context["site_url"] = get_script_prefix()  # "View site": the application's root, /apps/<name>/
        return context


def _hosted_registrations():
    """What the project registered on the default site for the hosted apps (auth's User and Group, and the
    admin classes of APP_HOSTED_APPS), never the supervisor's Environments and Applications."""
    labels = hosted_labels()
    return [(model, type(model_admin)) for model, model_admin in admin.site._registry.items()
            if model._meta.app_label in labels]


site = HostedAdminSite(name="admin")
for _model, _admin_class in _hosted_registrations():
    site.register(_model, _admin_class)
