"""Sending alerts (alerts.delivery through Controller.deliver_alerts): webhooks POSTed to a real HTTP receiver in a
thread, e-mail through Django's locmem backend, retries with backoff, every attempt recorded; with the real test
Redis and database and a clock."""

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.core import mail

from alerts import delivery
from alerts.models import EMAIL, ENVIRONMENT_OFFLINE, FAILED, PENDING, SENT, Alert, AlertChannel, Delivery
from controller.loop import Controller
from exchange import registry

from .alert_receiver import Receiver
from .conftest import free_port
from .factories import register_environment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_stop_grace(settings):
    settings.APP_ALERT_STOP_GRACE = 0  # the alerts here come from a worker's stop: at once


class Clock:
    def __init__(self, now=None):
        self.now = time.time() if now is None else now

    def __call__(self):
        return self.now


def env_a_goes_offline(r, controller):
    """env_a seen online, then stopped: one environment.offline alert, its deliveries pending."""
    register_environment("env_a")
    controller.mirror()
    controller.raise_alerts()
    registry.withdraw(r, {"name": "env_a"})
    controller.mirror()
    assert controller.raise_alerts()
    return Alert.objects.get()


def attempts(the_delivery):
    the_delivery.refresh_from_db()
    return [(a.number, a.ok, a.status_code, a.error) for a in the_delivery.attempts.all()]


def test_a_webhook_gets_the_alert_as_signed_json(r, settings):
    with Receiver() as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        controller = Controller()
        alert = env_a_goes_offline(r, controller)

        assert controller.deliver_alerts() is True
        assert controller.deliver_alerts() is False

    [(headers, body)] = receiver.posts
    assert json.loads(body) == {
        "event": ENVIRONMENT_OFFLINE, "environment": "env_a", "app": None, "message": alert.message,
        "at": alert.at.isoformat(), "status": "offline", "id": alert.pk,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("AppSupervisor/")
    expected = hmac.new(settings.APP_SHARED_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Appsup-Signature"] == f"sha256={expected}"
    sent = Delivery.objects.get()
    assert (sent.state, sent.result, sent.next_attempt_at) == (SENT, "HTTP 200", None)
    assert attempts(sent) == [(1, True, 200, "")]


def test_an_unreachable_receiver_is_retried_with_backoff_then_recorded_as_failed(r, settings):
    settings.APP_ALERT_WEBHOOKS = (f"http://127.0.0.1:{free_port()}/hook",)
    clock = Clock()
    controller = Controller(clock=clock)
    env_a_goes_offline(r, controller)

    waited = []
    assert controller.deliver_alerts()
    for delay in delivery.RETRY_DELAYS:
        clock.now += delay - 1
        waited.append(controller.deliver_alerts())
        clock.now += 1
        waited.append(controller.deliver_alerts())
    clock.now += 3600
    waited.append(controller.deliver_alerts())

    assert waited == [False, True, False, True, False, True, False]
    failed = Delivery.objects.get()
    assert failed.state == FAILED and failed.attempt_count == 4 and failed.next_attempt_at is None
    assert failed.result == "could not connect: Connection refused (attempt 4 of 4; given up)"
    assert attempts(failed) == [(n, False, None, "could not connect: Connection refused") for n in (1, 2, 3, 4)]
    times = [a.at for a in failed.attempts.all()]
    assert [int((b - a).total_seconds()) for a, b in zip(times, times[1:])] == list(delivery.RETRY_DELAYS)


def test_a_receiver_back_after_a_failure_gets_the_alert_and_the_success_is_recorded(r, settings):
    port = free_port()
    settings.APP_ALERT_WEBHOOKS = (f"http://127.0.0.1:{port}/hook",)
    clock = Clock()
    controller = Controller(clock=clock)
    env_a_goes_offline(r, controller)
    controller.deliver_alerts()
    pending = Delivery.objects.get()
    assert pending.state == PENDING
    assert pending.result == "could not connect: Connection refused (attempt 1 of 4; next in 10 s)"

    with Receiver(port=port) as receiver:
        clock.now += delivery.RETRY_DELAYS[0]
        assert controller.deliver_alerts()

    assert [a["event"] for a in receiver.alerts()] == [ENVIRONMENT_OFFLINE]
    assert attempts(pending) == [(1, False, None, "could not connect: Connection refused"), (2, True, 200, "")]
    assert pending.state == SENT


@pytest.mark.parametrize("answer", [500, 404, 302])
def test_an_answer_other_than_2xx_is_a_failure_naming_the_status(r, settings, answer):
    with Receiver(status=answer) as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        controller = Controller()
        env_a_goes_offline(r, controller)
        controller.deliver_alerts()

    assert len(receiver.posts) == 1  # a redirect is not followed
    retried = Delivery.objects.get()
    assert retried.state == PENDING and attempts(retried) == [(1, False, answer, f"HTTP {answer}")]


def test_a_receiver_that_does_not_answer_in_time_is_a_failure(r, settings, monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT", 0.3)
    with Receiver(delay=1.0) as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        controller = Controller()
        env_a_goes_offline(r, controller)
        began = time.monotonic()
        controller.deliver_alerts()
        assert time.monotonic() - began < 1.0

    assert attempts(Delivery.objects.get()) == [(1, False, None, "no answer within 0.3 s")]


def test_a_delivery_is_sent_once_whichever_of_two_controllers_attempts_it(r, settings):
    with Receiver() as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        first, second = Controller(), Controller()
        env_a_goes_offline(r, first)
        stale = Delivery.objects.get()  # read by the second before the first claims it

        assert first.deliver_alerts() and not second.deliver_alerts()
        assert delivery.claim(stale, second.now()) is False

    assert len(receiver.posts) == 1


def test_a_delivery_claimed_by_a_controller_that_died_is_sent_once_the_claim_runs_out(r, settings):
    with Receiver() as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        clock = Clock()
        controller = Controller(clock=clock)
        env_a_goes_offline(r, controller)
        assert delivery.claim(Delivery.objects.get(), controller.now())  # …and died before sending

        clock.now += delivery.CLAIM_SECONDS - 1
        assert not controller.deliver_alerts()
        clock.now += 1
        assert controller.deliver_alerts()

    assert len(receiver.posts) == 1


def test_a_slow_webhook_does_not_delay_the_mirror_nor_the_alerts(r, settings):
    with Receiver(delay=2.0) as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url,)
        controller = Controller()
        try:
            register_environment("env_a")
            register_environment("env_b")
            assert controller.run_pass(inline=False)
            registry.withdraw(r, {"name": "env_a"})

            began = time.monotonic()
            assert controller.run_pass(inline=False)  # raises env_a's alert; its delivery starts in the background
            registry.withdraw(r, {"name": "env_b"})
            assert controller.run_pass(inline=False)  # while the webhook still answers env_a's
            took = time.monotonic() - began

            assert took < 1.0, f"two passes took {took:.2f} s behind a webhook that answers in 2 s"
            assert sorted(Alert.objects.values_list("environment", flat=True)) == ["env_a", "env_b"]
            receiver.wait_for(lambda alerts: len(alerts) == 1, timeout=5)
            assert controller.run_pass(inline=False)
            receiver.wait_for(lambda alerts: len(alerts) == 2, timeout=5)
        finally:
            controller.stop_requested = True
            controller._deliverer.shutdown()
            controller._reconciler.shutdown()

    assert sorted(a["environment"] for a in receiver.alerts()) == ["env_a", "env_b"]
    assert set(Delivery.objects.values_list("state", flat=True)) == {SENT}


# -- e-mail ----------------------------------------------------------------------------------------------------


def test_an_email_channel_gets_the_alert_through_djangos_mail_settings(r, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.APP_ALERT_WEBHOOKS = ()
    AlertChannel.objects.create(name="oncall", kind=EMAIL, email="oncall@example.com")
    controller = Controller()
    alert = env_a_goes_offline(r, controller)

    assert controller.deliver_alerts()

    [message] = mail.outbox
    assert message.to == ["oncall@example.com"]
    assert message.subject == f"[App Supervisor] environment.offline: {alert.message}"
    assert alert.message in message.body and f"id: {alert.pk}" in message.body
    assert Delivery.objects.get().state == SENT


def test_an_application_error_of_several_lines_makes_a_one_line_subject(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    alert = Alert.objects.create(event="placement.error", environment="env_a", app="crm",
                                 message="crm failed on env_a: Traceback\n  File x\nValueError: no")

    delivery.send_email(alert, "oncall@example.com")

    assert mail.outbox[0].subject == "[App Supervisor] placement.error: crm failed on env_a: Traceback"


def test_a_mail_server_that_refuses_is_a_failure_retried_like_a_webhook(r, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    settings.APP_ALERT_WEBHOOKS = ()
    AlertChannel.objects.create(name="oncall", kind=EMAIL, email="oncall@example.com")
    clock = Clock()
    controller = Controller(clock=clock)
    env_a_goes_offline(r, controller)

    assert controller.deliver_alerts()

    retried = Delivery.objects.get()
    [(number, ok, status_code, error)] = attempts(retried)
    assert not ok and error.startswith("ConnectionRefusedError")
    assert retried.state == PENDING
    assert retried.next_attempt_at == controller.now() + timedelta(seconds=delivery.RETRY_DELAYS[0])
