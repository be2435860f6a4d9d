"""The Applications admin's *Move* action (docs/architecture.md, "Moving an application"): a confirmation page
that asks from where and to where, then the same move as ``POST /api/apps/<name>/move`` (apps.moves)."""

import redis
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from environments.models import Environment

from . import lifecycle, moves


class MoveForm(forms.Form):
    source = forms.ChoiceField(label="From")
    destination = forms.ChoiceField(label="To")
    drop_database = forms.BooleanField(
        label="Drop its database on the environment it leaves", required=False,
        help_text="Unticked, the database stays there (not served), as after a removal.")

    def __init__(self, application, *args, **kwargs):
        super().__init__(*args, **kwargs)
        placed = application.environment_names()
        self.fields["source"].choices = [(name, name) for name in placed]
        candidates = Environment.objects.exclude(name__in=placed).order_by("name")
        self.fields["destination"].choices = [
            (env.name, env.name + (f" ({moves.destination_refusal(env)})" if moves.destination_refusal(env) else ""))
            for env in candidates]


class MoveActionMixin:
    @admin.action(permissions=["operate"], description="Move the selected application with its data")
    def move(self, request, queryset):
        applications = list(queryset.order_by("name")[:2])
        if len(applications) != 1:
            self.message_user(request, "Select one application to move (one at a time).", messages.WARNING)
            return None
        application = applications[0]
        form = MoveForm(application, request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            self.run_move(request, application, form.cleaned_data)
            return None  # back to the changelist, which shows the message
        context = {
            **self.admin_site.each_context(request),
            "title": f"Move {application.name}?",
            "subtitle": None,
            "application": application,
            "form": form,
            "timeout": settings.APP_COMMAND_TIMEOUT,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/apps/application/move_confirmation.html", context)

    def run_move(self, request, application, data):
        source, destination = data["source"], data["destination"]
        try:
            moved = moves.move(application, source, destination, drop_database=data["drop_database"])
        except (moves.MoveRefused, moves.MoveFailed, lifecycle.OperationInProgress) as exc:
            self.message_user(request, f"{application.name} was not moved: {exc}. It still runs on {source}.",
                              messages.ERROR)
            return
        except redis.RedisError as exc:
            self.message_user(request, f"Could not move {application.name}: Redis is unavailable ({exc}).",
                              messages.ERROR)
            return
        record = moved.move
        text = (f"{application.name} moved from {source} to {destination} with its data ({record.size} bytes, "
                f"SHA-256 {record.sha256[:12]}…) in {moved.seconds:.1f} s.")
        self.message_user(request, f"{text} {moved.warning}" if moved.warning else text,
                          messages.WARNING if moved.warning else messages.SUCCESS)
        self.log_change(request, application, f"moved from {source} to {destination}"
                        + (f": {moved.warning}" if moved.warning else ""))
