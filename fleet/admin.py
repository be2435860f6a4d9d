"""Fleet upgrades in the admin (docs/architecture.md, "Fleet upgrades"): the Upgrades pages (the Applications list's
column and action are fleet.upgrade_action's), whose progress updates itself as the controller goes
(live/static/live/live.js re-reads the page's ``data-live-fragment`` parts on each ``upgrade`` event).
"""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from apps.admin import SupervisorAdmin, fragment

from .models import DONE, FAILED, Upgrade, UpgradeStep


class UpgradeStepInline(admin.TabularInline):
    model = UpgradeStep
    extra = 0
    can_delete = False
    fields = ("app", "environment", "shown_state", "migrations", "applied", "backup", "error", "started_at",
              "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="state")
    def shown_state(self, step):
        return fragment(f"upgrade-step:{step.pk}", format_html("{}", step.state))


@admin.register(Upgrade)
class UpgradeAdmin(SupervisorAdmin):
    list_display = ("__str__", "progress", "created_at", "finished_at", "asked_by")
    list_filter = ("state", "automatic")
    fields = ("progress", "apps", "automatic", "asked_by", "created_at", "finished_at")
    readonly_fields = fields
    inlines = (UpgradeStepInline,)

    def has_add_permission(self, request):
        return False  # asked for from the Applications list, the API or manage.py upgradeapps

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("apps.view_application") or request.user.has_perm("apps.change_application")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, upgrade):
        steps = list(upgrade.steps.all())
        done = sum(1 for s in steps if s.state == DONE)
        failed = [s for s in steps if s.state == FAILED]
        parts = [format_html("<strong>{}</strong>: {} of {} migrated", upgrade.state, done, len(steps))]
        if failed:
            parts.append(format_html_join(", ", '<span class="appsup-error">{} on {} failed</span>',
                                          ((s.app, s.environment) for s in failed)))
        return fragment(f"upgrade:{upgrade.pk}", format_html_join(" · ", "{}", ((p,) for p in parts)))
