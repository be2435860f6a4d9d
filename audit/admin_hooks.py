"""The admin's part of the audit log: ``Audited`` is mixed into the supervisor's ModelAdmins (apps.admin's
SupervisorAdmin, the API tokens', users' and groups'), so that what an operator does in the admin is recorded the
way Django records its history, from the same hooks:

* ``log_addition``, ``log_change``, ``log_deletions`` (Django's add, change and delete pages, and whatever of ours
  calls them) record ``<model>.create``, ``.change`` and ``.delete``;
* ``response_action`` records an admin action (start, stop, restart, move, drain, undrain, forget, revoke...) once
  it has run, one entry per selected object; a confirmation page is not a run and records nothing;
* the custom views of ``get_urls()`` (the change page's Start/Stop/Restart, Forget...) record a POST that ran.

An action's outcome is ``failed`` when it reported an error message to the operator, with that message as its
detail. The history Django writes during an action is kept as the action's ``history`` parameter rather than as
entries of its own.
"""

import functools
import json

from django.contrib import messages
from django.contrib.admin import helpers
from django.http import HttpResponseRedirect

from . import actions
from .log import Actor, acting_as, record, target_of

# The admin's own URL names; the others of get_urls() are custom views.
STANDARD_VIEWS = ("changelist", "add", "history", "delete", "change", "autocomplete")
# POST fields that are the admin's plumbing, not the operator's parameters.
PLUMBING = {"csrfmiddlewaretoken", "action", "select_across", "index", "post", helpers.ACTION_CHECKBOX_NAME}


def _messages_since(request, before):
    """(level, text) of the messages queued for the operator since there were BEFORE of them."""
    queued = getattr(getattr(request, "_messages", None), "_queued_messages", [])
    return [(m.level, str(m.message)) for m in queued[before:]]


def _queued(request):
    return len(getattr(getattr(request, "_messages", None), "_queued_messages", []))


def _posted(request):
    return {key: (values if len(values) > 1 else values[0]) for key, values in request.POST.lists()
            if key not in PLUMBING}


def _change_text(message):
    """Django's change message (JSON, or plain text from our own log_change calls) as data."""
    if isinstance(message, list):
        return message
    try:
        return json.loads(message)
    except (TypeError, ValueError):
        return message


class Audited:
    # -- Django's history hooks ------------------------------------------------------------------------------

    def _history(self, request, verb, obj, message=""):
        pending = getattr(request, "_audit_history", None)
        if pending is not None:  # inside an action or custom view: part of its entry
            pending.append({"target": target_of(obj), "what": verb, "message": _change_text(message)})
            return
        params = {"changed": _change_text(message)} if message else {}
        record(Actor.user(request.user), actions.admin_action(self.opts.model_name, verb), target_of(obj), params,
               request=request)

    def log_addition(self, request, obj, message):
        self._history(request, "add", obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._history(request, "change", obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._history(request, "delete", obj)
        return super().log_deletions(request, queryset)

    # -- actions and custom views ----------------------------------------------------------------------------

    def _run_recorded(self, request, verb, targets, run):
        """RUN (the action or view) and, if it ran rather than asked for confirmation (its answer a redirect),
        record VERB on each of TARGETS."""
        before = _queued(request)
        request._audit_history = []
        try:
            with acting_as(Actor.user(request.user)):  # what the action records (an alert sent...) is the user's
                response = run()
        finally:
            history, request._audit_history = request._audit_history, None
        if not isinstance(response, HttpResponseRedirect):
            return response
        said = _messages_since(request, before)
        errors = [text for level, text in said if level >= messages.ERROR]
        params = _posted(request)
        if history:
            params["history"] = history
        if said:
            params["messages"] = [text for _, text in said]
        for target in targets or [f"{self.opts.model_name}:?"]:
            record(Actor.user(request.user), actions.admin_action(self.opts.model_name, verb), target, params,
                   outcome=actions.FAILED if errors else actions.OK, detail="; ".join(errors), request=request)
        return response

    def response_action(self, request, queryset):
        verb = request.POST.get("action", "")
        if verb == "delete_selected" and verb not in getattr(self, "actions", ()) or not verb:
            # Django's own bulk delete: recorded by log_deletions, object by object.
            return super().response_action(request, queryset)
        if request.POST.get("select_across") == "1":
            targets = [f"{self.opts.model_name}:*"]
        else:
            selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            targets = [target_of(obj) for obj in self.model._default_manager.filter(pk__in=selected)]
        return self._run_recorded(request, verb, targets, lambda: super(Audited, self).response_action(
            request, queryset))

    @property
    def urls(self):
        # Not get_urls(): a subclass adds its custom views in its own get_urls(), above this mixin.
        urls = self.get_urls()
        prefix = f"{self.opts.app_label}_{self.opts.model_name}_"
        for pattern in urls:
            name = getattr(pattern, "name", None) or ""
            if name.startswith(prefix) and name[len(prefix):] not in STANDARD_VIEWS:
                pattern.callback = self._recorded_view(pattern.callback, name[len(prefix):])
        return urls

    def _recorded_view(self, view, name):
        @functools.wraps(view)
        def recorded(request, *args, **kwargs):
            user = request.user
            if request.method != "POST" or not (user.is_active and user.is_staff):
                return view(request, *args, **kwargs)  # a page, or the admin's redirect to its login
            verb = kwargs.get("command") or name
            object_id = kwargs.get("object_id")
            obj = self.model._default_manager.filter(pk=object_id).first() if object_id is not None else None
            targets = [target_of(obj)] if obj is not None else (
                [f"{self.opts.model_name}:{object_id}"] if object_id is not None else [])
            return self._run_recorded(request, verb, targets, lambda: view(request, *args, **kwargs))

        return recorded
