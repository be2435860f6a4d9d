"""The Applications admin's *upgrade needed* column and *Upgrade* action (docs/architecture.md, "Fleet upgrades"): a
confirmation page listing what each selected application would migrate, then the same upgrade as
``POST /api/upgrade``, followed on the upgrade's own page (fleet.admin).

Kept apart from fleet.admin, which builds on apps.admin, so that apps.admin can take this mixin.
"""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from . import upgrades
from .models import PendingMigrations


def fragment(key, content):
    """As apps.admin.fragment: a part of the page live.js re-reads after a change."""
    return format_html('<div class="appsup-fragment" data-live-fragment="{}">{}</div>', key, content)


def pending_count():
    """An annotation: how many migrations the application's environments report pending, in all."""
    per_app = (PendingMigrations.objects.filter(app=OuterRef("name")).values("app").annotate(n=Sum("count"))
               .values("n")[:1])
    return Coalesce(Subquery(per_app), 0)


class UpgradeActionMixin:
    """For the Applications admin: the *upgrade needed* column and the *Upgrade* action."""

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(pending_migrations=pending_count())

    @admin.display(description="upgrade", ordering="pending_migrations")
    def upgrade_needed(self, application):
        count = getattr(application, "pending_migrations", 0)
        if not count:
            return fragment(f"upgrade:{application.name}", format_html('<span class="appsup-muted">{}</span>', "up to date"))
        return fragment(f"upgrade:{application.name}", format_html(
            '<strong class="appsup-error">upgrade needed</strong> ({} migration{})', count, "" if count == 1 else "s"))

    @admin.action(permissions=["operate"], description="Upgrade (migrate) the selected applications")
    def upgrade(self, request, queryset):
        applications = list(queryset.order_by("name"))
        names = [application.name for application in applications]
        if request.POST.get("post") == "yes":
            upgrade = upgrades.create(names, asked_by=request.user.get_username())
            self.message_user(request, f"Upgrade {upgrade.pk} started: {upgrade.steps.count()} to migrate, in the "
                                       "background.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:fleet_upgrade_change", args=[upgrade.pk],
                                                current_app=self.admin_site.name))
        pending = {}
        for row in PendingMigrations.objects.filter(app__in=names, count__gt=0).order_by("environment"):
            pending.setdefault(row.app, []).append((row.environment, row.migrations))
        context = {
            **self.admin_site.each_context(request),
            "title": "Upgrade the selected applications?",
            "subtitle": None,
            "rows": [(application, pending.get(application.name, [])) for application in applications],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/fleet/upgrade/upgrade_confirmation.html", context)
