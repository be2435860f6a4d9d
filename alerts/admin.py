"""Alerts in the admin: the channels an operator adds (webhook or e-mail, with a "send a test alert" action), and
the alerts raised and their deliveries, read-only, each attempt listed.

The webhooks of APP_ALERT_WEBHOOKS come from the environment and are not stored as channels; the channel list says
which they are, and their deliveries name them as their source.
"""

from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.admin import SupervisorAdmin

from . import delivery as sender
from .forms import AlertChannelForm
from .models import SENT, Alert, AlertChannel, Delivery, DeliveryAttempt


class ReadOnly:
    """Alerts and their deliveries are written by the controller only."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AlertChannel)
class AlertChannelAdmin(SupervisorAdmin):
    form = AlertChannelForm
    list_display = ("name", "kind", "target", "enabled", "last_delivery")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "url", "email")
    fields = ("name", "kind", "url", "email", "enabled")
    actions = ("send_test_alert",)

    def changelist_view(self, request, extra_context=None):
        if settings.APP_ALERT_WEBHOOKS:
            messages.info(request, "Alerts also go to the webhooks of APP_ALERT_WEBHOOKS (set in the controller's "
                                   f"environment, not here): {', '.join(settings.APP_ALERT_WEBHOOKS)}")
        return super().changelist_view(request, extra_context)

    @admin.display(description="last delivery")
    def last_delivery(self, channel):
        last = channel.deliveries.order_by("-pk").first()
        if last is None:
            return "–"
        return format_html('<a href="{}">{}</a>: {}', reverse("admin:alerts_delivery_change", args=[last.pk]),
                           last.state, last.result or "not attempted yet")

    @admin.action(description="Send a test alert", permissions=["change"])
    def send_test_alert(self, request, queryset):
        for channel in queryset:
            sent = sender.send_test(channel)
            if sent.state == SENT:
                messages.success(request, f"Test alert sent to {channel} ({channel.target}): {sent.result}")
            else:
                messages.error(request, f"Test alert to {channel} ({channel.target}) failed: {sent.result}")


class DeliveryInline(ReadOnly, admin.TabularInline):
    model = Delivery
    fields = ("link", "source", "target", "state", "attempt_count", "last_attempt_at", "next_attempt_at", "result")
    readonly_fields = fields
    extra = 0

    @admin.display(description="delivery")
    def link(self, delivery):
        return format_html('<a href="{}">#{}</a>', reverse("admin:alerts_delivery_change", args=[delivery.pk]),
                           delivery.pk)


@admin.register(Alert)
class AlertAdmin(ReadOnly, SupervisorAdmin):
    list_display = ("at", "event", "environment", "app", "message", "delivered")
    list_filter = ("event", "environment", "held")
    search_fields = ("environment", "app", "message")
    date_hierarchy = "at"
    fields = ("event", "environment", "app", "status", "message", "at", "held")
    inlines = (DeliveryInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("deliveries")

    @admin.display(description="deliveries")
    def delivered(self, alert):
        if alert.held:
            return "held: the environment was flapping"
        deliveries = list(alert.deliveries.all())
        if not deliveries:
            return "no channel"
        counts = {}
        for d in deliveries:
            counts[d.state] = counts.get(d.state, 0) + 1
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


class AttemptInline(ReadOnly, admin.TabularInline):
    model = DeliveryAttempt
    fields = ("number", "at", "ok", "status_code", "error")
    readonly_fields = fields
    extra = 0


@admin.register(Delivery)
class DeliveryAdmin(ReadOnly, SupervisorAdmin):
    list_display = ("id", "alert_link", "source", "kind", "target", "state", "attempt_count", "last_attempt_at",
                    "next_attempt_at", "result")
    list_filter = ("state", "kind", "source", "alert__event")
    search_fields = ("target", "source", "result", "alert__message")
    fields = ("alert_link", "source", "kind", "target", "state", "attempt_count", "last_attempt_at",
              "next_attempt_at", "result")
    readonly_fields = fields
    list_select_related = ("alert",)
    inlines = (AttemptInline,)

    @admin.display(description="alert", ordering="alert__at")
    def alert_link(self, delivery):
        return format_html('<a href="{}">{}</a>', reverse("admin:alerts_alert_change", args=[delivery.alert_id]),
                           delivery.alert)
