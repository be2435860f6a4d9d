"""API tokens in the admin: created here, shown once, revoked here. A user who is not a superuser sees and creates
tokens for themselves only: a token for someone else would carry that someone's permissions."""

from django.contrib import admin, messages
from django.utils import timezone

from audit.admin_hooks import Audited

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(Audited, admin.ModelAdmin):
    list_display = ("name", "user", "hint", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username")
    readonly_fields = ("hint", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("user")
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def get_fields(self, request, obj=None):
        fields = ["name", "expires_at"]
        if request.user.is_superuser:
            fields.insert(0, "user")
        return fields + ([] if obj is None else list(self.readonly_fields))

    def get_readonly_fields(self, request, obj=None):
        # The holder and the secret never change: revoke and create another.
        return self.readonly_fields + (("user",) if obj is not None and request.user.is_superuser else ())

    def save_model(self, request, obj, form, change):
        if not change:
            if not request.user.is_superuser:
                obj.user = request.user
            token = obj.issue()
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(
                request,
                f"The token for {obj.user.get_username()} is {token} — copy it now: it is not stored and will not "
                "be shown again. Send it as 'Authorization: Bearer <token>'.",
                messages.WARNING,
            )

    @admin.action(permissions=["change"], description="Revoke selected API tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s); they are refused from now on.", messages.SUCCESS)
