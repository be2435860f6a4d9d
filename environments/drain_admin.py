"""The Environments admin's *Drain* and *Undrain* actions and its *service* column (environments.drain;
docs/architecture.md, "Draining an environment")."""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from . import drain


class DrainActionsMixin:
    def has_drain_permission(self, request):
        # Workers' rows are not the operator's to edit, but taking one out of service is an operator's change.
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(permissions=["drain"], description="Drain: take out of service and move the applications away")
    def drain(self, request, queryset):
        names = []
        for environment in queryset.order_by("name"):
            drain.request(environment)
            names.append(environment.name)
        self.message_user(request, f"Draining {', '.join(names)}: no new application goes there; the controller "
                          "moves each of its applications to the online environment with the fewest, one at a time. "
                          "The service column shows the progress.", messages.SUCCESS)

    @admin.action(permissions=["drain"], description="Undrain: return to service")
    def undrain(self, request, queryset):
        names = []
        for environment in queryset.order_by("name"):
            drain.undrain(environment)
            names.append(environment.name)
        self.message_user(request, f"{', '.join(names)} back in service: new applications may go there again.",
                          messages.SUCCESS)

    @admin.display(description="service")
    def service(self, environment):
        state = environment.drain_state
        if state is None:
            return "in service"
        left = environment.drain_left
        if not left:
            return state
        return format_html("{}<ul class=\"appsup-drain-left\">{}</ul>", state, format_html_join(
            "", "<li><strong>{}</strong>: {}</li>", sorted(left.items())))
