"""The audit log in the admin: read-only for everyone (superusers included), filterable by actor kind, actor,
action and outcome, by date, searchable by target, actor and request id. Users and groups are re-registered with
the audit hooks (audit.admin_hooks), since granting a permission is what an audit is most often read for."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from .admin_hooks import Audited
from .models import Entry


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_kind", "actor", "action", "target", "outcome", "status", "request_id")
    list_filter = ("actor_kind", "outcome", "action", "actor")
    search_fields = ("target", "actor", "request_id")
    date_hierarchy = "at"
    readonly_fields = [field.name for field in Entry._meta.fields]
    list_per_page = 100
    show_full_result_count = False  # a count of a long log costs more than the page

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


User = get_user_model()
for model, base in ((User, UserAdmin), (Group, GroupAdmin)):
    if admin.site.is_registered(model):
        base = type(admin.site.get_model_admin(model))
        admin.site.unregister(model)
    admin.site.register(model, type(f"Audited{base.__name__}", (Audited, base), {}))
