"""The Applications tab of the supervisor's admin, and what both tabs share.

Pages only read the database, which the controller keeps mirrored from Redis, and say so when that mirror may be
stale. Start, stop, restart and delete go through apps.lifecycle, the same code as the API and
``manage.py startapp_sequential``; this module only asks for confirmation and reports the outcome, one message per
application.

Pages update themselves without a reload (live/static/live/live.js, fed by the events socket): what may change is
marked with data attributes — ``data-live-placement="<app>:<environment>"`` (with ``data-state``),
``data-live-environment="<name>"`` (with ``data-status``), ``data-live-fragment`` around whatever the script
re-reads from the server after a change — and every date is a ``<time data-live-time>`` (live.moments).
"""


from urllib.parse import urlencode

import redis
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse, reverse_lazy
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.admin_hooks import Audited
from exchange import contract
from exchange import load as load_report
from exchange.redis_client import supervisor_redis
from fleet.upgrade_action import UpgradeActionMixin
from live.moments import moment_html
from proxy.targets import ENV_PARAM, PREFIX

from . import lifecycle, logs_admin, placements, refresh, signin
from .forms import ApplicationChangeForm, ApplicationCreateForm, publish_quietly
from .models import OPERATE_PERMISSION, Application
from .move_admin import MoveActionMixin

LIFECYCLE_COMMANDS = (contract.START, contract.STOP, contract.RESTART)

# What the confirmation page says will happen, per command.
CONSEQUENCES = {
    contract.START: "Each application is started on its environments one after the other, in the order shown; "
    "a failure stops it there, and the environments after it are not tried.",
    contract.STOP: "Each application is stopped on all its environments; until it is started again its pages "
    "answer 503.",
    contract.RESTART: "Each application is stopped and started again on its environments, one after the other.",
}


# The change page's part about the application's share of each worker web process (workers.gate).
SHARE = "Share of each worker web process"

# Applications per page of the Open page.
OPEN_PAGE_SIZE = 100

# What a bulk action's message says an application became, per command.
DONE = {contract.START: "Started", contract.STOP: "Stopped", contract.RESTART: "Restarted"}


def badge(state, title=""):
    """A coloured label for a runtime state or an environment status (CSS in apps/static/apps/admin.css)."""
    return format_html('<span class="appsup-badge appsup-badge-{}" title="{}" data-live-badge>{}</span>', state,
                       title, state)


def placement_badge(placement, now=None):
    shown = placement.badge_state(now)
    if shown == contract.UNKNOWN:
        title = placement.environment.offline_reason(now)
    elif shown == contract.DEGRADED:
        title = placement.environment.status_reason(now)
    else:
        title = placement.error
    return badge(shown, title)


def open_url(application_name, environment_name):
    """The application on one environment, through the supervisor's access proxy (the choice is remembered): on its
    own origin with APP_APPS_DOMAIN (the supervisor's host sends /apps/<name>/ there)."""
    return f"{PREFIX}/{application_name}/?{ENV_PARAM}={environment_name}"


def signin_url(placement):
    """"As operator": the page that opens the application's admin signed in (apps/signin.py)."""
    return reverse("admin:apps_application_signin", args=[placement.application.pk]) + "?" + urlencode(
        {"environment": placement.environment.name})


def open_link(placement, now=None):
    """"Open" for a placement; hidden (and shown by the page's script) while the application does not run there."""
    key = f"{placement.application.name}:{placement.environment.name}"
    running = placement.badge_state(now) == contract.RUNNING  # where the proxy would forward
    return format_html(
        '<a class="appsup-open" href="{}" target="_blank" rel="noopener" data-open="{}" title="open {} on {}"{}>'
        "Open</a>"
        ' <a class="appsup-open-as" href="{}" title="open the admin of {} on {} signed in as an operator">as operator</a>',
        open_url(placement.application.name, placement.environment.name), key, placement.application.name,
        placement.environment.name, "" if running else mark_safe(" hidden"),
        signin_url(placement), placement.application.name, placement.environment.name,
    )


def live_placement(placement, label, now=None, tag="span"):
    """LABEL, the placement's state badge and its "Open" link, in an element the page's script keeps current."""
    return format_html(
        '<{tag} class="appsup-placement" data-live-placement="{key}" data-state="{state}" data-at="{at}" '
        'data-environment-status="{status}" data-environment-problem="{problem}">'
        "{label} {badge} {link}</{tag}>",
        tag=mark_safe(tag), key=f"{placement.application.name}:{placement.environment.name}",
        state=placement.display_state(now), at=placement.state_at.isoformat() if placement.state_at else "",
        status=placement.environment.status(now), problem=placement.environment.status_reason(now),
        label=label, badge=placement_badge(placement, now), link=open_link(placement, now),
    )


def fragment(key, content):
    """CONTENT as a part of the page that the script replaces with a fresh copy from the server after a change."""
    return format_html('<div class="appsup-fragment" data-live-fragment="{}">{}</div>', key, content)


def outcome_message(application, outcome):
    """(level, text): what a start, stop or restart did, as one message for the application however many
    environments it has."""
    name, command = application.name, outcome.command
    done = [s for s in outcome.steps if s.ok]
    failed = [s for s in outcome.steps if not s.ok and s.kind != lifecycle.OFFLINE]
    offline = [s for s in outcome.steps if s.kind == lifecycle.OFFLINE]
    tried = {s.environment for s in outcome.steps}
    skipped = [env for env in application.environment_names() if env not in tried]
    sentences = []
    if done:
        sentences.append(f"{DONE[command]} {name} on " + ", ".join(f"{s.environment} ({s.seconds:.1f} s)" for s in done)
                         + ".")
    for step in failed:
        sentences.append(f"Could not {command} {name} on {step.environment}: {step.error.rstrip('.')}.")
    if offline:
        waiting = [s.environment for s in offline]
        sentences.append(" ".join(f"{s.error[:1].upper()}{s.error[1:].rstrip('.')}." for s in offline))
        if command in lifecycle.DESIRED:
            sentences.append(
                f"{name} stays desired {lifecycle.DESIRED[command]}: the controller completes the {command} on "
                f"{', '.join(waiting + skipped)} once {', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} "
                "back online.")
            skipped = []
    if skipped and outcome.failure is not None:
        sentences.append(f"Not tried on {', '.join(skipped)}, since {outcome.failure.environment} failed first.")
    level = messages.ERROR if failed else messages.WARNING if offline else messages.SUCCESS
    return level, " ".join(sentences)


def change_message(change):
    """(level, text): what a change of an application's environments did, in one message."""
    name = change.app
    sentences = [f"{name} now runs on {' → '.join(change.environments)}."]
    done = [s for s in change.steps if s.ok]
    if done:
        sentences.append(" ".join(
            f"{'Removed from' if s.environment in change.removed else 'Started on'} {s.environment} "
            f"({s.seconds:.1f} s)." for s in done))
    failure = change.failure
    if failure is not None:
        sentences.append(f"Could not {'remove' if failure.environment in change.removed else 'start'} it on "
                         f"{failure.environment}: {failure.error.rstrip('.')}; the controller tries again.")
    if change.waiting_for:
        sentences.append(change.pending_message()[:1].upper() + change.pending_message()[1:] + ".")
    if change.reordered and not change.added and not change.removed:
        sentences.append("The new order applies at its next start.")
    level = messages.ERROR if failure else messages.WARNING if change.waiting_for else messages.SUCCESS
    return level, " ".join(sentences)


class NeedsAttentionFilter(admin.SimpleListFilter):
    """Applications whose observed state differs from the desired one, that failed, or that run on an environment
    that is not online (ApplicationQuerySet.needing_attention)."""

    title = "attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Needs attention"), ("no", "In sync")]

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        attention = queryset.needing_attention()
        return queryset.filter(attention) if self.value() == "yes" else queryset.exclude(attention)


class EnvironmentFilter(admin.RelatedFieldListFilter):
    """By environment, without Django's "-" choice (applications on no environment): every application has one.

    Each environment is a link while there are at most CHOICES_MAX of them; beyond, the list would be most of the
    page (10,000 links): the filter then shows the chosen one and a box for an environment's name (``?environment=``).
    """

    template = "admin/apps/application/environment_filter.html"
    CHOICES_MAX = 30
    NAME_PARAMETER = "environment"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.name_value = params.pop(self.NAME_PARAMETER, [None])[-1]
        # What the name box keeps of the query: every other filter and the search, not the page nor this filter.
        dropped = {self.NAME_PARAMETER, "p", f"{field_path}__id__exact"}
        self.kept_parameters = [(key, value) for key, values in request.GET.lists() if key not in dropped
                                for value in values]
        super().__init__(field, request, params, model, model_admin, field_path)

    @property
    def include_empty_choice(self):
        return False

    def field_choices(self, field, request, model_admin):
        from environments.models import Environment

        choices = list(Environment.objects.order_by("name").values_list("pk", "name")[: self.CHOICES_MAX + 1])
        self.too_many = len(choices) > self.CHOICES_MAX
        if not self.too_many:
            return choices
        chosen = [pk for pk in self.lookup_val or () if pk.isdigit()]
        return list(Environment.objects.filter(pk__in=chosen).values_list("pk", "name")) if chosen else []

    def has_output(self):
        return self.too_many or super().has_output()

    def expected_parameters(self):
        return [*super().expected_parameters(), self.NAME_PARAMETER]

    def queryset(self, request, queryset):
        if self.name_value:
            queryset = queryset.filter(environments__name=self.name_value)
        return super().queryset(request, queryset)


def placement_rows(placements, now=None):
    """What the placement table and the confirmation page show for each placement."""
    return [
        {
            "placement": p,
            "key": f"{p.application.name}:{p.environment.name}",
            "state": p.display_state(now),
            "badge": placement_badge(p, now),
            "open": open_link(p, now),
            "offline_reason": "" if p.environment.is_online(now) else p.environment.offline_reason(now),
            "environment_status": p.environment.status(now),
            "environment_problem": p.environment.status_reason(now),
        }
        for p in placements
    ]


class SupervisorAdmin(Audited, admin.ModelAdmin):
    """Shared by both tabs: pages only read the database, which the controller keeps mirrored from Redis, and say
    so when that mirror may be stale (Redis down, no controller running). What operators do here is recorded in
    the audit log (audit.admin_hooks)."""

    class Media:
        css = {"all": ["apps/admin.css", "live/live.css"]}
        js = ["live/live.js"]

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
class ApplicationAdmin(UpgradeActionMixin, MoveActionMixin, SupervisorAdmin):
    add_form = ApplicationCreateForm
    change_form = ApplicationChangeForm
    list_display = ("name", "shown_display_name", "environment_states", "attention", "upgrade_needed")
    list_filter = ("desired_state", NeedsAttentionFilter, ("environments", EnvironmentFilter))
    search_fields = ("name", "display_name")
    actions = ("start", "stop", "restart", "move", "upgrade", "delete_selected")
    # "N results (M total)" would count the whole table again on every filtered page.
    show_full_result_count = False

    add_fieldsets = (
        (None, {"fields": ("name", "display_name", "environments", "admin_username", "admin_password")}),
        (SHARE, {"fields": ("concurrency", "request_timeout")}),
    )
    # Given by get_fieldsets, not as ``fieldsets``: the admin's checks refuse "environments" there, a many-to-many
    # through Placement, although the form declares its own field of that name (forms.OrderedEnvironmentsField).
    change_fieldsets = (
        (None, {"fields": ("name", "display_name", "custom_domains", "admin_username", "desired")}),
        ("Environments", {"fields": ("environments", "drop_database", "leaving", "placement_table", "attention")}),
        (SHARE, {"fields": ("concurrency", "request_timeout", "load")}),
        ("Record", {"fields": ("created", "updated"), "classes": ["collapse"]}),
    )
    # The name never changes after creation: it is in URLs, databases and Redis keys. The environments do, through
    # apps.placements (commands are sent), once the rest of the form is saved.
    readonly_fields = (
        "name", "admin_username", "desired", "leaving", "placement_table", "attention", "load", "created", "updated",
    )

    # -- rows ---------------------------------------------------------------------------------------------

    def get_queryset(self, request):
        return super().get_queryset(request).with_placements()

    @admin.display(description="display name", ordering="display_name")
    def shown_display_name(self, application):
        """Cut to the column's width (apps/admin.css), whole in its title: one long name must not push the states and
        the attention column off the list."""
        return format_html('<span class="appsup-display-name" title="{}">{}</span>', application.display_name,
                           application.display_name)

    @admin.display(description="needs attention", ordering="desired_state")
    def attention(self, application):
        """Desired vs observed at a glance: in sync, or what needs attention — what differs, an environment that is
        not online, what the controller waits for and when it tries again — and the last error, with its time."""
        now = timezone.now()
        shown = self._attention(application, now)
        error = self._last_error(application, now)
        return fragment(f"attention:{application.name}", shown if error is None else format_html("{}{}", shown, error))

    def _attention(self, application, now):
        if not application.needs_attention(now):
            return format_html('<span class="appsup-converged">{} · in sync</span>', application.desired_state)
        parts = [format_html("<strong>wants {}</strong>", application.desired_state)]
        drift = application.drift(now)
        parts += [format_html("{}: {}", p.environment.name, p.display_state(now)) for p in drift]
        parts += [format_html("{}: degraded", p.environment.name) for p in application.ordered_placements()
                  if p not in drift and p.environment.status(now) == contract.DEGRADED]
        if application.waiting_for:
            parts.append(format_html("waiting for {}", application.waiting_for))
        if application.next_attempt_at and application.attempts:
            parts.append(format_html("next retry {} ({} failed)", moment_html(application.next_attempt_at, now),
                                     application.attempts))
        return format_html('<div class="appsup-drift" data-attention>{}</div>',
                           format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts)))

    @staticmethod
    def _last_error(application, now):
        """The latest of the controller's last failure and the environments' reported errors, with its time; quiet
        once the application is back in sync. None when there is none."""
        found = [(p.state_at, f"{p.environment.name}: {p.error}") for p in application.ordered_placements()
                 if p.error and p.state_at]
        if application.last_error and application.last_error_at:
            found.append((application.last_error_at, application.last_error))
        if not found:
            return None
        at, text = max(found, key=lambda item: item[0])
        current = "appsup-error" if application.needs_attention(now) else "appsup-muted"
        return format_html(
            '<div class="appsup-last-error">last error: <span class="{}" title="{}">{}</span><br>{}</div>', current,
            text, text if len(text) <= 160 else text[:159] + "…", moment_html(at, now))

    @admin.display(description="desired state", ordering="desired_state")
    def desired(self, application):
        return fragment(f"desired:{application.name}", application.desired_state)

    @admin.display(description="environments, in start order")
    def environment_states(self, application):
        """One line per environment, in start order."""
        now = timezone.now()
        return fragment(f"states:{application.name}", format_html_join(
            "",
            "{}",
            (
                (live_placement(p, format_html(
                    '{}<a href="{}">{}</a>', mark_safe('<span class="appsup-then">→ </span>') if index else "",
                    reverse("admin:environments_environment_change", args=[p.environment.pk]), p.environment.name),
                    now),)
                for index, p in enumerate(application.ordered_placements())
            ),
        ))

    @admin.display(description="leaving")
    def leaving(self, application):
        """Environments the application has left where its remove has not run yet (apps.models.Removal)."""
        removals = list(application.removals.select_related("environment").order_by("environment__name"))
        # A fragment: the page's script reads it again once the controller has removed it there.
        if not removals:
            return fragment(f"leaving:{application.name}", "—")
        return fragment(f"leaving:{application.name}", format_html_join(mark_safe("<br>"), "{}: {}", (
            (r.environment.name, (f"waiting for it to be back online ({r.environment.offline_reason()})"
                                  if not r.environment.is_online() else
                                  f"remove failed ({r.error}), next try {r.next_attempt_at:%H:%M:%S}" if r.error
                                  else "being removed")
             + ("; its database is dropped" if r.drop_database else "; its database is kept"))
            for r in removals)))

    @admin.display(description="state per environment")
    def placement_table(self, application):
        rows = placement_rows(application.ordered_placements())
        return fragment(f"placements:{application.name}",
                        render_to_string("admin/apps/application/placement_table.html", {"rows": rows}))

    @admin.display(description="load now")
    def load(self, application):
        """Its requests in flight, waiting and refused on each environment, as the worker web processes last
        reported them (exchange.load); read from Redis, never written."""
        environments = application.environment_names()
        try:
            found = load_report.read(supervisor_redis(), environments)
        except redis.RedisError as exc:
            return format_html('<span class="appsup-muted">unknown: Redis is unavailable ({})</span>', exc)
        rows = [(env, found.get(env, {}).get(application.name, dict.fromkeys(load_report.COUNTERS, 0)))
                for env in environments]
        return format_html(
            '<table class="appsup-load"><thead><tr><th>environment</th><th>in flight</th><th>queued</th>'
            "<th>refused (503)</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                             ((env, c["in_flight"], c["queued"], c["refused"]) for env, c in rows)))

    @admin.display(description="created")
    def created(self, application):
        return moment_html(application.created_at)

    @admin.display(description="last changed")
    def updated(self, application):
        return moment_html(application.updated_at)

    # -- add and change forms -------------------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.change_fieldsets

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = self.add_form if obj is None else self.change_form
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            form.save_domains()
            # The display name and the domains are part of what workers and the proxy read.
            transaction.on_commit(lambda: publish_quietly(obj.pk))
            names = form.new_environments()
            if names is not None:
                # Once the form is saved: commands are only sent outside a transaction.
                drop = form.cleaned_data.get("drop_database", False)
                transaction.on_commit(lambda: self.change_environments(request, obj, names, drop))
        else:
            form.save_with_placements(obj)

    def change_environments(self, request, application, names, drop_database):
        """Change where APPLICATION runs (apps.placements) and say what was done, what waits and what failed."""
        try:
            change = placements.change_environments(application, names, drop_database=drop_database)
        except lifecycle.OperationInProgress as exc:
            self.message_user(request, f"The environments of {application} were not changed: {exc}.",
                              messages.WARNING)
            return
        except redis.RedisError as exc:
            self.message_user(request, f"The environments of {application} were not changed: Redis is unavailable "
                              f"({exc}).", messages.ERROR)
            return
        except Application.DoesNotExist:
            self.message_user(request, f"{application} was deleted meanwhile.", messages.WARNING)
            return
        level, text = change_message(change)
        self.message_user(request, text, level)
        self.log_change(request, application, f"environments: {' → '.join(change.environments)}; "
                        + "; ".join(s.line() for s in change.steps))

    # -- start, stop, restart ------------------------------------------------------------------------------

    @admin.action(permissions=["operate"], description="Start selected applications")
    def start(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.START)

    @admin.action(permissions=["operate"], description="Stop selected applications")
    def stop(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.STOP)

    @admin.action(permissions=["operate"], description="Restart selected applications")
    def restart(self, request, queryset):
        return self.lifecycle_action(request, queryset, contract.RESTART)

    def has_operate_permission(self, request, obj=None):
        """apps.operate_application: start, stop and restart (the actions' permissions=["operate"] asks this)."""
        return request.user.has_perm(OPERATE_PERMISSION)

    def render_change_form(self, request, context, *args, **kwargs):
        context["has_operate_permission"] = self.has_operate_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)

    def lifecycle_action(self, request, queryset, command):
        applications = list(queryset.order_by("name"))
        if request.POST.get("post") == "yes":
            self.run_lifecycle(request, applications, command)
            return None  # back to the changelist, which shows the messages
        return self.lifecycle_confirmation(request, applications, command, action_name=command)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("open/", self.admin_site.admin_view(self.open_view), name=f"{info[0]}_{info[1]}_open"),
            path("<path:object_id>/signin/", self.admin_site.admin_view(self.signin_view),
                 name=f"{info[0]}_{info[1]}_signin"),
        ] + [
            path(
                f"<path:object_id>/{command}/",
                self.admin_site.admin_view(self.lifecycle_view),
                {"command": command},
                name=f"{info[0]}_{info[1]}_{command}",
            )
            for command in LIFECYCLE_COMMANDS
        ] + [
            path("<path:object_id>/logs/", self.admin_site.admin_view(self.logs_view), name=f"{info[0]}_{info[1]}_logs"),
        ] + super().get_urls()

    def logs_view(self, request, object_id):
        return logs_admin.logs_view(self, request, unquote(object_id))

    def open_view(self, request):
        """Where "View site" leads: every application, with a link to open it on each environment it runs on."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        now = timezone.now()
        page = Paginator(self.get_queryset(request).order_by("name"), OPEN_PAGE_SIZE).get_page(request.GET.get("p"))
        rows = [{"app": app, "placements": [live_placement(p, p.environment.name, now)
                                            for p in app.ordered_placements()]} for app in page]
        context = {
            **self.admin_site.each_context(request),
            "title": "Open an application",
            "subtitle": None,
            "rows": rows,
            "page": page,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return self.with_staleness_warning(
            request, TemplateResponse(request, "admin/apps/application/open.html", context))

    @admin.display(description="custom domains")
    def custom_domains(self, obj):
        """Shown so to a user who may view but not change it (the form's field otherwise)."""
        return ", ".join(obj.domain_names()) or "–"

    def signin_view(self, request, object_id):
        """"Open as operator": choose the environment, then a POST answers with a redirect to a one-time link that
        signs the operator into the application's admin there (apps/signin.py)."""
        if not signin.may_sign_in(request.user):
            raise PermissionDenied
        application = self.get_object(request, unquote(object_id))
        if application is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        environments = [p.environment.name for p in application.ordered_placements()]
        if request.method == "POST":
            environment = request.POST.get("environment")
            if environment not in environments:
                self.message_user(request, f"{application.name} is not placed on {environment!r}.", messages.ERROR)
                return HttpResponseRedirect(request.path)
            return HttpResponseRedirect(signin.link(request, application.name, environment))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Open {application.name} as operator",
            "subtitle": None,
            "object": application,
            "opts": self.opts,
            "environments": environments,
            "mapped_user": signin.mapped_username(request.user),
            "max_age": settings.APP_SIGNIN_MAX_AGE,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/apps/application/signin_confirmation.html", context)

    def lifecycle_view(self, request, object_id, command):
        """The change page's Start/Stop/Restart buttons: the same confirmation, then the same run."""
        application = self.get_object(request, unquote(object_id))
        if application is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_operate_permission(request):
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
        level, text = outcome_message(application, outcome)
        self.message_user(request, text, level)
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
        failure = outcome.failure
        # Deleting it anyway would leave it running, or its database unaccounted for, where the removal failed.
        self.message_user(
            request,
            f"{name} was not deleted: it is deleted once every environment has removed it, and {failure.environment} "
            f"has not ({failure.error.rstrip('.')}). "
            + (f"Bring {failure.environment} back online and try again." if failure.kind == lifecycle.OFFLINE
               else "Try again once the problem is fixed."),
            messages.ERROR,
        )
        return False

    def delete_queryset(self, request, queryset):
        """Returns the names of the applications that are gone."""
        return [app.name for app in queryset if self.delete_model(request, app)]


# "View site" in the admin's header: the applications, each with its "Open" links.
admin.site.site_url = reverse_lazy("admin:apps_application_open")
