"""The controller's part of the audit log: what its steps do (commands sent, alerts sent, caches rebuilt) is
recorded as that controller's, and the prune step keeps APP_AUDIT_DAYS, a bounded batch a pass, run with a clock."""

import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest

from alerts.models import Alert
from apps.models import Application
from audit import actions
from audit import log as audit
from audit.models import Entry
from controller.loop import Controller
from exchange import contract, registry

from .alert_receiver import Receiver
from .factories import ThreadAgent, create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self, now=None):
        self.now = time.time() if now is None else now

    def __call__(self):
        return self.now


def test_a_start_the_controller_sends_is_recorded_as_the_controllers(r):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        Application.objects.filter(name="crm").update(desired_state=contract.RUNNING)
        controller = Controller(holder="host-1:4242")

        assert controller.reconcile_one() is True

    entry = Entry.objects.get()
    assert (entry.actor_kind, entry.actor, entry.action, entry.target, entry.outcome) == (
        "controller", "host-1:4242", "application.start", "application:crm", "ok")
    assert entry.parameters["environments"] == ["env_a"]


def test_a_failed_start_of_the_controller_is_recorded_failed_naming_the_environment(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    Application.objects.filter(name="crm").update(desired_state=contract.RUNNING)

    assert Controller(timeout=1).reconcile_one() is True  # nobody consumes env_a's queue

    entry = Entry.objects.get()
    assert entry.outcome == "failed" and entry.detail.startswith("env_a: ")


def test_a_cache_rebuild_is_recorded(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    r.flushdb()  # as FLUSHALL would, on the test's own database (the quick suite shares the server)

    assert Controller(holder="c1").rebuild_cache_if_missing() is True

    assert list(Entry.objects.values_list("actor_kind", "actor", "action")) == [
        ("controller", "c1", "cache.rebuild")]


def test_an_alert_sent_is_recorded_without_the_webhooks_url(r, settings):
    settings.APP_ALERT_STOP_GRACE = 0
    with Receiver() as receiver:
        settings.APP_ALERT_WEBHOOKS = (receiver.url + "/hooks/T000/secret-path",)
        controller = Controller(holder="c1")
        register_environment("env_a")
        controller.mirror()
        controller.raise_alerts()
        registry.withdraw(r, {"name": "env_a"})
        controller.mirror()
        controller.raise_alerts()

        assert controller.deliver_alerts() is True

    entry = Entry.objects.get(action=actions.ALERT_SEND)
    assert (entry.actor_kind, entry.actor, entry.target) == ("controller", "c1", f"alert:{Alert.objects.get().pk}")
    assert entry.parameters["event"] == "environment.offline" and entry.parameters["environment"] == "env_a"
    assert "secret-path" not in str(entry.parameters) + entry.detail


def test_the_prune_keeps_app_audit_days_and_deletes_a_bounded_batch_a_pass(settings, monkeypatch):
    settings.APP_AUDIT_DAYS = 30
    monkeypatch.setattr("audit.models.PRUNE_BATCH", 2)
    clock = Clock(datetime(2026, 6, 1, tzinfo=dt_timezone.utc).timestamp())
    now = datetime.fromtimestamp(clock.now, tz=dt_timezone.utc)
    alice = audit.Actor(actions.USER, "alice")
    for days in (40, 35, 31, 29, 1):
        audit.record(alice, actions.APPLICATION_START, f"application:app{days}", at=now - timedelta(days=days))
    controller = Controller(clock=clock, holder="c1")

    assert controller.prune_audit() is True
    assert controller.prune_audit() is True
    assert controller.prune_audit() is False

    kept = Entry.objects.filter(actor="alice").values_list("target", flat=True)
    assert sorted(kept) == ["application:app1", "application:app29"]
    pruned = Entry.objects.filter(action=actions.AUDIT_PRUNE).order_by("pk")
    assert [e.parameters["deleted"] for e in pruned] == [2, 1]  # the prune is itself in the log
    assert {e.actor for e in pruned} == {"c1"}


def test_a_refused_prune_is_logged_and_the_controller_goes_on(settings, monkeypatch, caplog):
    from django.db import DatabaseError

    def refused(*args, **kwargs):
        raise DatabaseError("audit entries are append-only: DELETE refused")

    monkeypatch.setattr("audit.models.EntryQuerySet.prune", refused)

    assert Controller(holder="c1").prune_audit() is False
    assert "could not prune the audit log" in caplog.text
