"""The Applications tab of the supervisor's admin, and what both tabs share.

Every page first brings the database mirror up to date with Redis (apps.refresh) and, when Redis is away, says
so and answers from the mirror. Start, stop, restart and delete go through apps.lifecycle, the same code as the
API and ``manage.py startapp_sequential``; this module only asks for confirmation and reports the outcome.
"""


import redis
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from exchange import contract

from . import lifecycle, refresh
from .forms import ApplicationCreateForm, publish_quietly
from .models import Application

LIFECYCLE_COMMANDS = (contract.START, contract.STOP, contract.RESTART)

# What the confirmation page says will happen, per command.
CONSEQUENCES = {
    contract.START: "Each application is started on its environments one after the other, in the order shown; "
    "a failure stops it there, and the environments after it are not tried.",
    contract.STOP: "Each application is stopped on all its environments; until it is started again its pages "
    "answer 503.",
    contract.RESTART: "Each application is stopped and started again on its environments, one after the other.",
}


def badge(state, title=""):
    """A coloured label for a runtime state or an environment status (CSS in apps/static/apps/admin.css)."""
    return format_html('<span class="appsup-badge appsup-badge-{}" title="{}">{}</span>', state, title, state)


def placement_badge(placement):
    shown = placement.display_state()
    if shown == contract.UNKNOWN:
        title = placement.environment.offline_reason()
    else:
        title = placement.error
    return badge(shown, title)


class NeedsAttentionFilter(admin.SimpleListFilter):
    """Applications whose observed state differs from the desired one, or that failed."""

    title = "attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Needs attention"), ("no", "In sync")]

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        attention = queryset.needing_attention()
        return queryset.filter(attention) if self.value() == "yes" else queryset.exclude(attention)


def placement_rows(placements):
    """What the placement table and the confirmation page show for each placement."""
    return [
        {
            "placement": p,
            "badge": placement_badge(p),
            "offline_reason": "" if p.environment.is_online() else p.environment.offline_reason(),
        }
        for p in placements
    ]


class SupervisorAdmin(admin.ModelAdmin):
    """Shared by both tabs: pages only read the database, which the controller keeps mirrored from Redis, and say
    so when that mirror may be stale (Redis down, no controller running)."""

    class Media:
        css = {"all": ["apps/admin.css"]}

    @staticmethod
    def with_staleness_warning(request, response):
        """Warn on the page this response renders (a redirect does not: the page it leads to warns itself)."""
        if isinstance(response, TemplateResponse):
            warning = refresh.staleness_warning()
            if warning:
                messages.warning(request, warning)
        return response

    def changelist_view(self, request, extra_context=None):
        return self.with_staleness_warning(request, super().changelist_view(request, extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self.with_staleness_warning(request, super().changeform_view(request, object_id, form_url, extra_context))

    def delete_view(self, request, object_id, extra_context=None):
        return self.with_staleness_warning(request, super().delete_view(request, object_id, extra_context))

    def change_url(self, obj):
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )


@admin.register(Application)
class ApplicationAdmin(SupervisorAdmin):
    add_form = ApplicationCreateForm
    list_display = ("name", "display_name", "environment_states", "convergence")
    list_filter = ("desired_state", NeedsAttentionFilter, "environments")
    search_fields = ("name", "display_name")
    actions = ("start", "stop", "restart", "delete_selected")

    add_fieldsets = (
        (None, {"fields": ("name", "display_name", "environments", "admin_username", "admin_password")}),
    )
    fieldsets = (
        (None, {"fields": ("name", "display_name", "environment_order", "admin_username", "desired_state")}),
        ("Environments", {"fields": ("placement_table", "convergence")}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ["collapse"]}),
    )
    # Only the display name changes after creation: the name is in URLs, databases and Redis keys, and moving
    # an application between environments is not something an edit can do.
    readonly_fields = (
        "name", "environment_order", "admin_username", "desired_state", "placement_table", "convergence",
        "created_at", "updated_at",
    )

    # -- rows ---------------------------------------------------------------------------------------------

    def get_queryset(self, request):
        return super().get_queryset(request).with_placements()

    @admin.display(description="desired state and convergence", ordering="desired_state")
    def convergence(self, application):
        """Desired vs observed at a glance: in sync, or what differs, why, and when the controller tries again."""
        drift = application.drift()
        if not drift:
            return format_html('<span class="appsup-converged">{} · in sync</span>', application.desired_state)
        parts = [format_html("<strong>wants {}</strong>", application.desired_state)]
        parts += [format_html("{}: {}", p.environment.name, p.display_state()) for p in drift]
        if application.waiting_for:
            parts.append(format_html("waiting for {}", application.waiting_for))
        if application.next_attempt_at and application.attempts:
            parts.append(format_html("next retry {} ({} failed)", naturaltime(application.next_attempt_at),
                                     application.attempts))
        errors = [p for p in drift if p.error]
        if application.last_error and application.attempts:
            parts.append(format_html('<span class="appsup-error">{}</span> ({})', application.last_error,
                                     naturaltime(application.last_error_at)))
        elif errors:
            parts.append(format_html('<span class="appsup-error">{}: {}</span> ({})', errors[0].environment.name,
                                     errors[0].error, naturaltime(errors[0].state_at)))
        return format_html('<div class="appsup-drift">{}</div>',
                           format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts)))

    @admin.display(description="environments (start order) and state")
    def environment_states(self, application):
        return format_html_join(
            mark_safe('<span class="appsup-then"> → </span>'),
            '<span class="appsup-placement"><a href="{}">{}</a> {}</span>',
            (
                (reverse("admin:environments_environment_change", args=[p.environment.pk]), p.environment.name,
                 placement_badge(p))
                for p in application.ordered_placements()
            ),
        )

    @admin.display(description="environments, in start order")
    def environment_order(self, application):
        return " → ".join(application.environment_names())

    @admin.display(description="state per environment")
    def placement_table(self, application):
        rows = placement_rows(application.ordered_placements())
        return render_to_string("admin/apps/application/placement_table.html", {"rows": rows})

    # -- add and change forms -------------------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            # The display name is part of what workers and the proxy read.
            transaction.on_commit(lambda: publish_quietly(obj.pk))
        else:
            form.save_with_placements(obj)

    # -- start, stop, restart ------------------------------------------------------------------------------

    @admin.action(permissions=["change"], description="Start selected applications")
    def start(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.START)

    @admin.action(permissions=["change"], description="Stop selected applications")
    def stop(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.STOP)

    @admin.action(permissions=["change"], description="Restart selected applications")
    def restart(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.RESTART)

    def lifecycle_action(self, request, queryset, command):
        applications = list(queryset.order_by("name"))
        if request.POST.get("post") == "yes":
            self.run_lifecycle(request, applications, command)
            return None  # back to the changelist, which shows the messages
        return self.lifecycle_confirmation(request, applications, command, action_name=command)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                f"<path:object_id>/{command}/",
                self.admin_site.admin_view(self.lifecycle_view),
                {"command": command},
                name=f"{info[0]}_{info[1]}_{command}",
            )
            for command in LIFECYCLE_COMMANDS
        ] + super().get_urls()

    def lifecycle_view(self, request, object_id, command):
        """The change page's Start/Stop/Restart buttons: the same confirmation, then the same run."""
        application = self.get_object(request, unquote(object_id))
        if application is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, application):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("post") == "yes":
            self.run_lifecycle(request, [application], command)
            return HttpResponseRedirect(self.change_url(application))
        return self.with_staleness_warning(request, self.lifecycle_confirmation(request, [application], command))

    def lifecycle_confirmation(self, request, applications, command, action_name=None):
        """Nothing is sent until the operator confirms (the delete-confirmation pattern: POST with post=yes)."""
        rows = [{"app": app, "placements": placement_rows(app.ordered_placements())} for app in applications]
        single = applications[0] if len(applications) == 1 else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"{command.capitalize()} {single.name if single else 'applications'}?",
            "subtitle": None,
            "command": command,
            "consequence": CONSEQUENCES[command],
            "timeout": settings.APP_COMMAND_TIMEOUT,
            "rows": rows,
            "object": single if action_name is None else None,
            "action_name": action_name,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/apps/application/lifecycle_confirmation.html", context)

    def run_lifecycle(self, request, applications, command):
        """Run COMMAND for each application in turn and report every environment's outcome."""
        for index, application in enumerate(applications):
            try:
                outcome = lifecycle.run(application, command)
            except lifecycle.OperationInProgress as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            except redis.RedisError as exc:
                self.message_user(
                    request, f"Could not {command} {application}: Redis is unavailable ({exc}).", messages.ERROR
                )
                rest = [a.name for a in applications[index + 1:]]
                if rest:
                    # Each would meet the same outage; say so once instead of failing them one by one.
                    self.message_user(request, f"Not attempted: {', '.join(rest)}.", messages.WARNING)
                return
            self.report(request, application, outcome)

    def report(self, request, application, outcome):
        for step in outcome.steps:
            level = messages.SUCCESS if step.ok else messages.ERROR
            self.message_user(request, f"{application} ({outcome.command}) — {step.line()}", level)
        tried = {step.environment for step in outcome.steps}
        skipped = [name for name in application.environment_names() if name not in tried]
        if outcome.waiting_for and outcome.command in lifecycle.DESIRED:
            waiting = outcome.waiting_for + skipped
            self.message_user(
                request,
                f"{application} stays desired {lifecycle.DESIRED[outcome.command]}: pending on {', '.join(waiting)}; "
                f"the controller completes the {outcome.command} there once {', '.join(outcome.waiting_for)} "
                "is back online.",
                messages.WARNING,
            )
        elif skipped:
            self.message_user(
                request,
                f"{application} ({outcome.command}) — not tried on {', '.join(skipped)} "
                f"because {outcome.failure.environment} failed first.",
                messages.WARNING,
            )
        self.log_change(request, application, f"{outcome.command}: " + "; ".join(s.line() for s in outcome.steps))

    # -- delete ----------------------------------------------------------------------------------------------

    def delete_view(self, request, object_id, extra_context=None):
        if request.method != "POST":
            return super().delete_view(request, object_id, extra_context)  # Django's confirmation page
        # Confirmed. Not inside Django's transaction around delete_view: removal waits for the workers, and
        # commands are only sent once a transaction commits.
        application = self.get_object(request, unquote(object_id))
        if application is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_delete_permission(request, application):
            raise PermissionDenied
        pk, display = application.pk, str(application)
        if self.delete_model(request, application):
            return self.response_delete(request, display, pk)
        return HttpResponseRedirect(self.change_url(application))

    @admin.action(permissions=["delete"], description="Delete selected applications")
    def delete_selected(self, request, queryset):
        if request.POST.get("post") != "yes":
            return django_delete_selected(self, request, queryset)  # Django's own confirmation page
        removed = self.delete_queryset(request, queryset.order_by("name"))
        if removed:
            self.message_user(request, f"Deleted {', '.join(removed)}.", messages.SUCCESS)
        return None

    def delete_model(self, request, obj):
        """Remove through lifecycle (stopped on every environment first); a failure is reported, not raised.
        Returns whether the application is gone."""
        pk, name = obj.pk, obj.name
        try:
            outcome = lifecycle.remove(obj, drop_database=request.POST.get("drop_database") == "yes")
        except lifecycle.OperationInProgress as exc:
            self.message_user(request, f"{name} was not deleted: {exc}.", messages.WARNING)
            return False
        except redis.RedisError as exc:
            self.message_user(request, f"Could not delete {name}: Redis is unavailable ({exc}).", messages.ERROR)
            return False
        if outcome.ok:
            # The instance lost its pk in the deletion; the history entry needs it.
            self.log_deletions(request, [Application(pk=pk, name=name)])
            return True
        for step in outcome.steps:
            level = messages.SUCCESS if step.ok else messages.ERROR
            self.message_user(request, f"{name} (remove) — {step.line()}", level)
        failed = outcome.failure.environment
        # Deleting it anyway would leave it running, or its database unaccounted for, where the removal failed.
        self.message_user(
            request,
            f"{name} was not deleted: it is deleted once every environment has removed it, and {failed} has not. "
            + (f"Bring {failed} back online and try again." if outcome.failure.kind == lifecycle.OFFLINE
               else "Try again once the problem is fixed."),
            messages.ERROR,
        )
        return False

    def delete_queryset(self, request, queryset):
        """Returns the names of the applications that are gone."""
        return [app.name for app in queryset if self.delete_model(request, app)]
