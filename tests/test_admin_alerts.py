"""Alerts in the supervisor's admin: channels added, checked and tested; alerts and deliveries listed read-only."""

import pytest
from django.urls import reverse

from alerts.models import EMAIL, FAILED, SENT, WEBHOOK, Alert, AlertChannel, Delivery
from alerts.transitions import transition
from exchange.contract import OFFLINE, ONLINE

from .alert_receiver import Receiver
from .conftest import free_port
from .factories import register_environment
from .pages import messages_of

pytestmark = pytest.mark.django_db

ADD = "admin:alerts_alertchannel_add"
CHANNELS = "admin:alerts_alertchannel_changelist"


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


def add_channel(client, **fields):
    return client.post(reverse(ADD), {"kind": WEBHOOK, "url": "", "email": "", "enabled": "on", **fields})


def raise_offline_alert(settings, url):
    from django.utils import timezone

    settings.APP_ALERT_WEBHOOKS = (url,)
    now = timezone.now()
    transition("env_a", "", ONLINE, OFFLINE, now,
               Alert(event="environment.offline", environment="env_a", status=OFFLINE, message="env_a is gone", at=now),
               or_create=True)
    return Alert.objects.get()


def test_a_webhook_channel_is_added_with_an_http_url(admin_client):
    response = add_channel(admin_client, name="ops", url="https://hooks.example.com/appsup")

    assert response.status_code == 302
    channel = AlertChannel.objects.get()
    assert (channel.kind, channel.target, channel.enabled) == (WEBHOOK, "https://hooks.example.com/appsup", True)


@pytest.mark.parametrize("fields, field, error", [
    ({"url": "ftp://hooks.example.com/"}, "url", "Enter a valid URL."),
    ({"url": "javascript:alert(1)"}, "url", "Enter a valid URL."),
    ({}, "url", "A webhook channel needs the http(s) URL to POST alerts to."),
    ({"kind": EMAIL, "email": "not an address"}, "email", "Enter a valid email address."),
    ({"kind": EMAIL}, "email", "An e-mail channel needs the address to send alerts to."),
    ({"kind": "sms", "url": "https://x.test/"}, "kind", "Select a valid choice. sms is not one of the available "
                                                        "choices."),
])
def test_a_channel_that_cannot_work_is_refused_naming_the_field(admin_client, fields, field, error):
    response = add_channel(admin_client, name="ops", **fields)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [error]
    assert not AlertChannel.objects.exists()


def test_an_email_channel_keeps_only_its_address(admin_client):
    add_channel(admin_client, name="oncall", kind=EMAIL, email="oncall@example.com", url="https://stray.test/")

    channel = AlertChannel.objects.get()
    assert (channel.kind, channel.target, channel.url) == (EMAIL, "oncall@example.com", "")


def test_the_channel_list_names_the_webhooks_of_the_environment(admin_client, settings):
    settings.APP_ALERT_WEBHOOKS = ("https://hooks.example.com/a",)

    response = admin_client.get(reverse(CHANNELS))

    assert any("APP_ALERT_WEBHOOKS" in text and "https://hooks.example.com/a" in text
               for _, text in messages_of(response))


def test_a_test_alert_is_sent_at_once_and_recorded(admin_client):
    with Receiver() as receiver:
        channel = AlertChannel.objects.create(name="ops", url=receiver.url, enabled=False)
        response = admin_client.post(reverse(CHANNELS), {"action": "send_test_alert", "_selected_action": [channel.pk]},
                                     follow=True)

    [alert] = receiver.alerts()
    assert alert["event"] == "test" and "channel ops" in alert["message"]
    assert ("success", f"Test alert sent to ops ({receiver.url}): HTTP 200") in messages_of(response)
    assert Delivery.objects.get().state == SENT


def test_a_failed_test_alert_says_why(admin_client):
    url = f"http://127.0.0.1:{free_port()}/hook"
    channel = AlertChannel.objects.create(name="ops", url=url)

    response = admin_client.post(reverse(CHANNELS), {"action": "send_test_alert", "_selected_action": [channel.pk]},
                                 follow=True)

    [(level, text)] = [m for m in messages_of(response) if "Test alert" in m[1]]
    assert level == "error"
    assert text.startswith(f"Test alert to ops ({url}) failed: could not connect: Connection refused")


def test_alerts_and_deliveries_are_listed_with_their_attempts_and_cannot_be_edited(admin_client, settings):
    register_environment("env_a")
    url = f"http://127.0.0.1:{free_port()}/hook"
    alert = raise_offline_alert(settings, url)
    from alerts import delivery

    delivery.deliver_due()
    failed = Delivery.objects.get()

    listed = admin_client.get(reverse("admin:alerts_alert_changelist"), {"event": "environment.offline"})
    assert listed.status_code == 200 and "env_a is gone" in listed.content.decode()
    assert "1 pending" in listed.content.decode()
    shown = admin_client.get(reverse("admin:alerts_alert_change", args=[alert.pk]))
    assert shown.status_code == 200 and url in shown.content.decode()
    deliveries = admin_client.get(reverse("admin:alerts_delivery_changelist"), {"state": "pending"})
    assert deliveries.status_code == 200 and url in deliveries.content.decode()
    attempt = admin_client.get(reverse("admin:alerts_delivery_change", args=[failed.pk]))
    assert "Connection refused" in attempt.content.decode()
    assert admin_client.get(reverse("admin:alerts_delivery_changelist"), {"state": FAILED}).status_code == 200

    assert admin_client.get(reverse("admin:alerts_alert_add")).status_code == 403
    assert admin_client.get(reverse("admin:alerts_delivery_add")).status_code == 403
    admin_client.post(reverse("admin:alerts_alert_change", args=[alert.pk]), {"message": "edited"})
    assert Alert.objects.get().message == "env_a is gone"
    assert admin_client.post(reverse("admin:alerts_alert_delete", args=[alert.pk]), {"post": "yes"}).status_code == 403


def test_an_unknown_filter_value_is_not_a_500(admin_client):
    for name in ("alert", "delivery", "alertchannel"):
        response = admin_client.get(reverse(f"admin:alerts_{name}_changelist"), {"state": "bogus", "at__gte": "x"})
        assert response.status_code < 500


def test_pages_only_read(admin_client, settings):
    register_environment("env_a")
    raise_offline_alert(settings, "http://127.0.0.1:1/hook")
    before = list(Delivery.objects.values_list("state", "attempt_count", "next_attempt_at"))

    for name in ("alert", "delivery", "alertchannel"):
        admin_client.get(reverse(f"admin:alerts_{name}_changelist"))

    assert list(Delivery.objects.values_list("state", "attempt_count", "next_attempt_at")) == before
