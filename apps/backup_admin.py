"""The Applications admin's backups (docs/architecture.md, "Backups and restores"; apps.backups): a page per
application listing its backups with their size and checksum, a download link each, "Back up now", and a restore
behind a confirmation; the "Back up now" action on selected applications; the schedule, retention and template
fields of the change form; and the add form's "Start from" (a template's data)."""

import redis
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from supervisor_project.config import cron_problem

from . import backups, clones, lifecycle
from .forms import ApplicationChangeForm, ApplicationCreateForm
from .models import BACKUP_PERMISSION, Application, Backup

FAILURES = (backups.BackupRefused, backups.BackupFailed, lifecycle.OperationInProgress, redis.RedisError)


def clean_schedule(value):
    value = " ".join((value or "").split())
    if value and value.lower() != "off" and cron_problem(value):
        raise forms.ValidationError(f"{cron_problem(value)}, \"off\", or blank for APP_BACKUP_SCHEDULE.")
    return value


class BackupSettingsChangeForm(ApplicationChangeForm):
    """The admin's change form: the API's, plus the backup schedule, retention and template flag."""

    class Meta(ApplicationChangeForm.Meta):
        fields = [*ApplicationChangeForm.Meta.fields, "backup_schedule", "backup_keep", "is_template"]

    def clean_backup_schedule(self):
        return clean_schedule(self.cleaned_data.get("backup_schedule"))


class TemplateCreateForm(ApplicationCreateForm):
    """The admin's add form: the API's, plus the template to start from."""

    start_from = forms.ModelChoiceField(
        queryset=Application.objects.none(), required=False, label="Start from",
        help_text="A template's data (a fresh backup of it, loaded before the first start); the new application's "
        "admin account is the one given here. Blank: an empty application.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start_from"].queryset = Application.objects.filter(is_template=True).order_by("name")


class BackupAdminMixin:
    change_form = BackupSettingsChangeForm
    add_form = TemplateCreateForm

    def has_backup_permission(self, request, obj=None):
        """apps.backup_application: take, download and restore backups, and start from a template."""
        return request.user.has_perm(BACKUP_PERMISSION)

    @admin.display(description="Backups")
    def backups_link(self, application):
        count = application.backups.count()
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_backups", args=[application.pk])
        return format_html('<a href="{}">{} backup{}</a>', url, count, "" if count == 1 else "s")

    @admin.action(permissions=["backup"], description="Back up the selected applications now")
    def back_up(self, request, queryset):
        for application in queryset.order_by("name"):
            self.take_backup(request, application)

    def take_backup(self, request, application):
        try:
            backup = backups.take(application)
        except FAILURES as exc:
            self.message_user(request, f"{application.name} was not backed up: {exc}", messages.ERROR)
            return
        self.message_user(request, f"{application.name} backed up on {backup.environment}: backup {backup.pk}, "
                                   f"{backup.size} bytes, SHA-256 {backup.sha256[:12]}…", messages.SUCCESS)
        self.log_change(request, application, f"backed up (backup {backup.pk})")

    def backup_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/backups/", view(self.backups_view), name=f"{info[0]}_{info[1]}_backups"),
            path("<path:object_id>/backups/<int:backup_id>/download/", view(self.backup_download_view),
                 name=f"{info[0]}_{info[1]}_backup_download"),
            path("<path:object_id>/backups/<int:backup_id>/restore/", view(self.backup_restore_view),
                 name=f"{info[0]}_{info[1]}_backup_restore"),
        ]

    def _application(self, request, object_id):
        application = self.get_object(request, unquote(object_id))
        if application is None:
            raise Http404(f"no application {object_id}")
        return application

    def _backup(self, application, backup_id):
        backup = Backup.objects.filter(application=application, pk=backup_id).select_related("application").first()
        if backup is None:
            raise Http404(f"{application.name} has no backup {backup_id}")
        return backup

    def backups_view(self, request, object_id):
        application = self._application(request, object_id)
        if not self.has_view_or_change_permission(request, application):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_backup_permission(request):
                raise PermissionDenied
            self.take_backup(request, application)
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Backups of {application.name}",
            "subtitle": None,
            "application": application,
            "backups": application.backups.all(),
            "restores": application.restores.all()[:backups.RESTORES_LISTED],
            "schedule": backups.schedule_of(application) or "none",
            "keep": backups.keep(application),
            "can_backup": self.has_backup_permission(request),
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/apps/application/backups.html", context)

    def backup_download_view(self, request, object_id, backup_id):
        if not self.has_backup_permission(request):
            raise PermissionDenied
        backup = self._backup(self._application(request, object_id), backup_id)
        return FileResponse(backups.open_stored(backup), as_attachment=True, filename=backup.file.rsplit("/", 1)[-1],
                            content_type="application/octet-stream")

    def backup_restore_view(self, request, object_id, backup_id):
        """A confirmation, then the same restore as POST /api/apps/<name>/restore."""
        if not self.has_backup_permission(request):
            raise PermissionDenied
        application = self._application(request, object_id)
        backup = self._backup(application, backup_id)
        back = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_backups", args=[application.pk])
        if request.method == "POST" and request.POST.get("post") == "yes":
            try:
                restored = backups.restore(application, backup)
            except FAILURES as exc:
                self.message_user(request, f"{application.name} was not restored: {exc}", messages.ERROR)
                return HttpResponseRedirect(back)
            safety = f" (its data before is in safety backup {restored.safety.pk})" if restored.safety else ""
            self.message_user(request, f"{application.name} restored from backup {backup.pk} in "
                                       f"{restored.seconds:.1f} s{safety}.", messages.SUCCESS)
            self.log_change(request, application, f"restored from backup {backup.pk}")
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Restore {application.name} from backup {backup.pk}?",
            "subtitle": None,
            "application": application,
            "backup": backup,
            "timeout": settings.APP_COMMAND_TIMEOUT,
            "opts": self.opts,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/apps/application/restore_confirmation.html", context)

    def start_from_template(self, request, application, template):
        """After the add form is saved (outside its transaction: commands are sent): load the template's data."""
        if not self.has_backup_permission(request):
            self.message_user(request, f"{application.name} was created empty: starting from {template.name} needs "
                                       f"the {BACKUP_PERMISSION} permission.", messages.WARNING)
            return
        refusal = clones.fill(application, template)
        if refusal is not None:
            self.message_user(request, f"{application.name} was not created from {template.name}: "
                                       f"{refusal.content.decode()}", messages.ERROR)
            return
        self.message_user(request, f"{application.name} holds {template.name}'s data; start it to serve it.",
                          messages.SUCCESS)

    def save_with_template(self, request, obj, form):
        template = form.cleaned_data.get("start_from")
        if template is not None:
            transaction.on_commit(lambda: self.start_from_template(request, obj, template))
