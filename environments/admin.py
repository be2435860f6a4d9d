"""The Environments tab: what the workers registered, whether they are alive, and removing the dead ones.

Workers register themselves, so there is nothing to add or edit here; an environment is deleted only once it is
offline and hosts nothing (its placements are protected), and its registration leaves Redis with it, or the next
refresh would bring it back. One that hosts applications and will never answer again is forgotten with its
placements ("Forget environment", environments.retire), after a confirmation naming what it hosted.
"""

import redis
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.admin import SupervisorAdmin, badge, fragment, live_placement
from environments import mirror as registry_mirror
from exchange import keys, registry
from exchange.contract import DEGRADED, OFFLINE, ONLINE
from exchange.redis_client import supervisor_redis
from live.moments import moment_html

from . import enrollment, resources, retire
from .drain_admin import DrainActionsMixin
from .models import Environment


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(ONLINE, "Online"), (DEGRADED, "Degraded"), (OFFLINE, "Offline")]

    def queryset(self, request, queryset):
        if self.value() == ONLINE:
            return queryset.online().exclude(web_ok=False)
        if self.value() == DEGRADED:
            return queryset.online().filter(web_ok=False)
        if self.value() == OFFLINE:
            return queryset.offline()
        return queryset


def deletion_blocker(environment):
    """Why ENVIRONMENT cannot be deleted, and what to do about it, or None."""
    if environment.is_online():
        return (f"Environment {environment} cannot be deleted while it is online: its worker would register it again. "
                "Stop its worker (runworker) first; once it shows offline, delete it.")
    hosted = sorted(app.name for app in environment.applications.all())
    if hosted:
        return (f"Environment {environment} cannot be deleted while it hosts applications ({', '.join(hosted)}). "
                "Delete those applications first, or, if it will never answer again, use Forget environment: it "
                "removes its placements, and the applications keep running on their other environments.")
    return None


def rejected_notice():
    """What the controller last counted of the registrations in Redis that do not verify (none of them is a row
    here), or None when there are none."""
    try:
        summary = registry_mirror.rejected_summary(supervisor_redis())
    except redis.RedisError:
        return None  # the page says that Redis is unavailable already
    if not summary or not summary["count"]:
        return None
    count = summary["count"]
    return format_html(
        "{} registration{} in Redis {} not verify (not signed with a key enrolled for the environment they name, "
        "or malformed) and {} ignored: no environment is created for them. Someone who can write to Redis (or "
        "another environment) wrote them, or a worker is not enrolled (manage.py enrollenvironment NAME "
        "--public-key=KEY) or runs with another key; they stay counted until removed from Redis "
        "(HDEL appsup:environments NAME). Last seen:{}",
        f"{count:,}", "" if count == 1 else "s", "does" if count == 1 else "do", "is" if count == 1 else "are",
        format_html('<ul class="appsup-rejected">{}</ul>', format_html_join(
            "", "<li><code>{}</code>: {} ({})</li>",
            ((item["name"], item["reason"], moment_html(item["at"])) for item in summary["recent"]))))


@admin.register(Environment)
class EnvironmentAdmin(DrainActionsMixin, SupervisorAdmin):
    list_display = ("name", "status_badge", "service", "last_heartbeat", "resources", "addresses", "version")
    list_filter = (StatusFilter,)
    search_fields = ("name", "url", "proxy_url")
    actions = ("drain", "undrain", "delete_selected", "forget")
    list_select_related = ("drain",)
    # "N results (M total)" would count the whole table again on every filtered page.
    show_full_result_count = False
    fields = (
        "name", "status_badge", "service", "version", "url", "proxy_url", "host", "pid",
        "first_seen", "last_heartbeat", "resources", "stopped", "last_refusal", "hosted_applications", "signing_keys",
    )
    readonly_fields = fields

    # Workers register themselves; what they registered is not the operator's to edit.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        notice = rejected_notice()
        if notice is not None:
            messages.warning(request, notice)
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            resources.attach(changelist.result_list)  # one Redis read for the page, not one per row
        return response

    @admin.display(description="CPU · memory")
    def resources(self, environment):
        """What the agent last reported with its heartbeats (exchange.usage) of itself and its web process."""
        if not hasattr(environment, "usage_report"):
            resources.attach([environment])
        return resources.html(environment.usage_report)

    @admin.display(description="status")
    def status_badge(self, environment):
        now = timezone.now()
        status = environment.status(now)
        if environment.rejected:
            shown = format_html('{} <span class="appsup-reason">{}</span>', badge("rejected", environment.rejected),
                                environment.rejected)
        elif status == DEGRADED:
            shown = format_html('{} <span class="appsup-reason">{}</span>',
                                badge(status, environment.status_reason(now)), environment.problem)
        else:
            shown = badge(status, environment.status_reason(now))
        return fragment(f"status:{environment.name}", format_html(
            '<span class="appsup-environment" data-live-environment="{}" data-status="{}">{}</span>',
            environment.name, status, shown))

    @admin.display(description="address")
    def addresses(self, environment):
        """Where the worker is, and where the supervisor's proxy reaches it when that differs."""
        if not environment.proxy_url or environment.proxy_url == environment.url:
            return format_html('<span class="appsup-url">{}</span>', environment.url)
        return format_html('<span class="appsup-url">{}</span><span class="appsup-url appsup-muted">proxy: {}</span>',
                           environment.url, environment.proxy_url)

    @admin.display(description="last refused command")
    def last_refusal(self, environment):
        if not environment.refusal:
            return "none"
        return format_html('<span class="appsup-error">{}</span><br>{}', environment.refusal,
                           moment_html(environment.refusal_at))

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def last_heartbeat(self, environment):
        return fragment(f"heartbeat:{environment.name}", moment_html(environment.last_heartbeat_at))

    @admin.display(description="first seen")
    def first_seen(self, environment):
        return moment_html(environment.first_seen_at)

    @admin.display(description="stopped")
    def stopped(self, environment):
        return moment_html(environment.stopped_at, empty="–")

    def get_object(self, request, object_id, from_field=None):
        environment = super().get_object(request, object_id, from_field)
        if environment is not None:
            placements = list(environment.placements.select_related("application").order_by("application__name"))
            for placement in placements:
                placement.environment = environment
            environment.shown_placements = placements
        return environment

    @admin.display(description="applications")
    def hosted_applications(self, environment):
        placements = getattr(environment, "shown_placements", None)
        if placements is None:
            placements = environment.placements.select_related("application", "environment")
        if not placements:
            return fragment(f"hosted:{environment.name}", "none")
        now = timezone.now()
        return fragment(f"hosted:{environment.name}", format_html(
            '<ul class="appsup-hosted">{}</ul>',
            format_html_join(
                "",
                "{}",
                (
                    (live_placement(p, format_html('<a href="{}">{}</a>', reverse(
                        "admin:apps_application_change", args=[p.application.pk]), p.application.name), now,
                        tag="li"),)
                    for p in placements
                ),
            ),
        ))

    # -- forget ----------------------------------------------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/forget/", self.admin_site.admin_view(self.forget_view),
                 name=f"{info[0]}_{info[1]}_forget"),
            path("<path:object_id>/keys/", self.admin_site.admin_view(self.keys_view),
                 name=f"{info[0]}_{info[1]}_keys"),
        ] + super().get_urls()

    # -- keys --------------------------------------------------------------------------------------------------

    @admin.display(description="public keys")
    def signing_keys(self, environment):
        link = reverse("admin:environments_environment_keys", args=[environment.pk])
        if not environment.public_keys:
            return format_html('none enrolled: its registrations are rejected. <a href="{}">Enroll its key</a>', link)
        return format_html('{} <a href="{}">Record, replace or retire a key</a>', format_html_join(
            ", ", "<code>{}</code> (id {})", ((text, keys.key_id(text)) for text in environment.public_keys)), link)

    def keys_view(self, request, object_id):
        """Record a public key for the environment (replacing its keys, or beside the current one: a rotation), or
        retire one (environments.enrollment); then published to Redis at once."""
        environment = self.get_object(request, unquote(object_id))
        if environment is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not request.user.has_perm("environments.change_environment"):
            raise PermissionDenied
        error = ""
        if request.method == "POST":
            try:
                if request.POST.get("retire"):
                    enrollment.retire(environment.name, request.POST["retire"])
                    done = f"The key was retired: {environment} no longer signs with it."
                else:
                    enrollment.enroll(environment.name, request.POST.get("public_key", ""),
                                      keep_current=request.POST.get("keep_current") == "on")
                    done = f"The key of {environment} was recorded."
            except enrollment.EnrollmentError as exc:
                error = str(exc)
            else:
                try:
                    enrollment.publish(supervisor_redis())
                except redis.RedisError as exc:
                    done += f" Redis is unavailable ({exc}): the controller publishes it once it answers."
                self.log_change(request, environment, done)
                self.message_user(request, done, messages.SUCCESS)
                return HttpResponseRedirect(self.change_url(environment))
        environment.refresh_from_db()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Keys of environment {environment}",
            "subtitle": None,
            "object": environment,
            "keys": [(text, keys.key_id(text)) for text in environment.public_keys],
            "error": error,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/environments/environment/keys.html", context,
                                status=400 if error else 200)

    @admin.action(permissions=["delete"], description="Forget environment (one that will never answer)")
    def forget(self, request, queryset):
        chosen = list(queryset[:2])
        if len(chosen) != 1:
            self.message_user(request, "Forget one environment at a time: its confirmation names what it hosts.",
                              messages.ERROR)
            return None
        return HttpResponseRedirect(reverse("admin:environments_environment_forget", args=[chosen[0].pk]))

    def forget_view(self, request, object_id):
        """A confirmation naming the applications it hosts and what becomes of them; on POST, environments.retire."""
        environment = self.get_object(request, unquote(object_id))
        if environment is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_delete_permission(request, environment):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("post") == "yes":
            try:
                with transaction.atomic():  # the history entry goes with the deletion, or neither stays
                    self.log_deletions(request, Environment.objects.filter(pk=environment.pk))
                    hosted = retire.forget(environment, force=True)
            except retire.Refused as refusal:
                self.message_user(request, str(refusal), messages.ERROR)
                return HttpResponseRedirect(self.change_url(environment))
            except redis.RedisError as exc:
                self.message_user(request, f"Could not forget {environment}: Redis is unavailable ({exc}); nothing "
                                           "was deleted.", messages.ERROR)
                return HttpResponseRedirect(self.change_url(environment))
            self.message_user(request, f"Environment {environment} was forgotten" + (
                f", with its placements of {', '.join(hosted)}." if hosted else "."), messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:environments_environment_changelist"))
        applications = retire.hosted(environment)
        refusal = retire.blocker(environment, force=True)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Forget environment {environment}?",
            "subtitle": None,
            "object": environment,
            "applications": applications,
            "stranded": retire.stranded(environment),
            "consequence": retire.consequence(environment, applications) if applications else "",
            "blocker": str(refusal) if refusal else "",
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/environments/environment/forget_confirmation.html", context)

    # -- delete ----------------------------------------------------------------------------------------------

    def delete_view(self, request, object_id, extra_context=None):
        environment = self.get_object(request, unquote(object_id))
        if environment is not None:
            reason = deletion_blocker(environment)
            if reason:
                self.message_user(request, reason, messages.ERROR)
                return HttpResponseRedirect(self.change_url(environment))
        try:
            return super().delete_view(request, object_id, extra_context)
        except redis.RedisError as exc:
            # Django's transaction around the deletion has rolled it back.
            self.message_user(request, f"Could not delete {environment}: Redis is unavailable ({exc}).", messages.ERROR)
            return HttpResponseRedirect(self.change_url(environment))

    def response_delete(self, request, obj_display, obj_id):
        response = super().response_delete(request, obj_display, obj_id)
        if isinstance(response, HttpResponseRedirect):
            # Django sends users who may not change the model to the admin index; here nobody may change
            # environments, and the list is where the operator came from.
            response = HttpResponseRedirect(reverse("admin:environments_environment_changelist"))
        return response

    @admin.action(permissions=["delete"], description="Delete selected offline environments")
    def delete_selected(self, request, queryset):
        deletable = []
        for environment in queryset.prefetch_related("applications"):
            reason = deletion_blocker(environment)
            if reason:
                self.message_user(request, reason, messages.ERROR)
            else:
                deletable.append(environment.pk)
        if not deletable:
            return None
        try:
            # Django's confirmation page, then its deletion, for the environments that may go; the history entries
            # roll back with the deletion if Redis refuses.
            with transaction.atomic():
                return django_delete_selected(self, request, queryset.filter(pk__in=deletable))
        except redis.RedisError as exc:
            self.message_user(request, f"Could not delete environments: Redis is unavailable ({exc}).", messages.ERROR)
            return None

    def delete_model(self, request, obj):
        with transaction.atomic():
            obj.delete()
            registry.forget(supervisor_redis(), [obj.name])

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            names = list(queryset.values_list("name", flat=True))
            queryset.delete()
            registry.forget(supervisor_redis(), names)
