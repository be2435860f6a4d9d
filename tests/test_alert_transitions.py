"""Alerts raised by the controller (alerts.transitions through Controller.raise_alerts): once per transition, against
the durable record in the database, whichever controller sees it; with the real test Redis and database and a
clock."""

import time

import pytest
from django.db import connection

from alerts import transitions
from alerts.models import (
    EMAIL,
    ENVIRONMENT_DEGRADED,
    ENVIRONMENT_OFFLINE,
    ENVIRONMENT_ONLINE,
    IN_ERROR,
    PLACEMENT_ERROR,
    RECOVERED,
    WEBHOOK,
    Alert,
    AlertChannel,
    AlertState,
    Delivery,
)
from controller.loop import Controller
from exchange import contract, redis_client, registry, status

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)

HOOK = "http://alerts.test/hook"


class Clock:
    def __init__(self, now=None):
        self.now = time.time() if now is None else now

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def _webhook(settings):
    settings.APP_ALERT_WEBHOOKS = (HOOK,)
    settings.APP_ALERT_STOP_GRACE = 0  # a worker's stop is news at once here; the grace has tests of its own


def look(*controllers):
    """A controller's pass as far as alerts go: mirror Redis, then raise what changed."""
    for controller in controllers:
        controller.mirror()
        controller.raise_alerts()


def alerts(event=None):
    found = Alert.objects.order_by("pk")
    return list(found.filter(event=event) if event else found)


def test_an_environment_seen_for_the_first_time_is_recorded_without_an_alert(r):
    register_environment("env_a")
    registry.announce(r, {"name": "env_b", "url": "http://env_b.test", "web_ok": False, "problem": "no answer"})

    look(Controller())

    assert alerts() == []
    assert dict(AlertState.objects.values_list("environment", "status")) == {
        "env_a": contract.ONLINE, "env_b": contract.DEGRADED}


def test_an_environment_going_offline_is_alerted_once_whichever_of_two_controllers_sees_it(r):
    register_environment("env_a")
    first, second = Controller(), Controller()
    look(first, second)
    registry.withdraw(r, {"name": "env_a"})

    look(first, second)
    look(second, first)

    [alert] = alerts()
    assert (alert.event, alert.environment, alert.app, alert.status) == (ENVIRONMENT_OFFLINE, "env_a", "",
                                                                         contract.OFFLINE)
    assert "env_a is offline: its worker stopped" in alert.message
    assert list(alert.deliveries.values_list("source", "target", "state")) == [("APP_ALERT_WEBHOOKS", HOOK, "pending")]


def test_of_two_controllers_only_the_lease_holder_raises_alerts(r):
    register_environment("env_a")
    first, second = Controller(), Controller()
    assert first.run_pass() and not second.run_pass()
    registry.withdraw(r, {"name": "env_a"})

    assert not second.run_pass() and first.run_pass()

    assert [a.event for a in alerts()] == [ENVIRONMENT_OFFLINE]


def test_a_transition_claimed_by_one_controller_is_not_claimed_by_another_that_saw_it_too():
    register_environment("env_a")
    look(Controller())
    now = Controller().now()
    # Both read "online" and found the environment offline; both try to move it.
    claims = [transitions.transition("env_a", "", contract.ONLINE, contract.OFFLINE, now,
                                     Alert(event=ENVIRONMENT_OFFLINE, environment="env_a", message="gone", at=now))
              for _ in range(2)]

    assert claims == [True, False]
    assert len(alerts()) == 1 and Delivery.objects.count() == 1


def test_a_restarted_controller_does_not_alert_again(r):
    register_environment("env_a")
    look(Controller())
    registry.withdraw(r, {"name": "env_a"})
    look(Controller())

    look(Controller())  # restarted: nothing in memory, the same database

    assert [a.event for a in alerts()] == [ENVIRONMENT_OFFLINE]


def test_an_environment_back_online_is_alerted_once(r):
    register_environment("env_a")
    controller = Controller()
    look(controller)
    registry.withdraw(r, {"name": "env_a"})
    look(controller)

    register_environment("env_a")
    look(controller, Controller(), controller)

    assert [(a.event, a.message) for a in alerts()][1:] == [
        (ENVIRONMENT_ONLINE, "environment env_a is online (it was offline)")]


def test_a_degraded_environment_is_alerted_with_the_reason(r):
    register_environment("env_a")
    controller = Controller()
    look(controller)
    registry.announce(r, {"name": "env_a", "url": "http://env_a.test", "web_ok": False,
                          "problem": "the web process does not answer /healthz"})

    look(controller, controller)

    [alert] = alerts()
    assert alert.event == ENVIRONMENT_DEGRADED
    assert alert.message == ("environment env_a is degraded; reported by env_a: the web process does not answer "
                             "/healthz")


def test_a_heartbeat_older_than_the_timeout_is_alerted_as_offline_with_its_age(settings):
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    clock.now += settings.APP_HEARTBEAT_TIMEOUT - 1
    look(controller)
    assert alerts() == []
    clock.now += 2
    look(controller)

    [alert] = alerts()
    assert alert.event == ENVIRONMENT_OFFLINE
    assert f"last heartbeat {settings.APP_HEARTBEAT_TIMEOUT + 1} s ago" in alert.message


def test_after_redis_lost_its_data_an_old_heartbeat_is_alerted_only_once_agents_had_a_timeout_to_return(r, settings):
    clock = Clock()
    timeout = settings.APP_HEARTBEAT_TIMEOUT
    register_environment("env_a", heartbeat_at=clock.now)
    register_environment("env_b", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    clock.now += timeout - 1
    r.flushdb()  # Redis restarted empty (its database: other processes of the run share the server)
    assert controller.rebuild_cache_if_missing()
    clock.now += 2  # the heartbeats mirrored last are now older than the timeout
    look(controller)
    assert alerts() == []
    registry.withdraw(r, {"name": "env_b"})  # a worker that stops is news at once
    look(controller)
    assert [a.environment for a in alerts(ENVIRONMENT_OFFLINE)] == ["env_b"]

    clock.now += timeout  # env_a's agent had a whole timeout to register again, and did not
    look(controller)
    assert [a.environment for a in alerts(ENVIRONMENT_OFFLINE)] == ["env_b", "env_a"]


def test_after_redis_was_unreachable_an_old_heartbeat_waits_a_timeout_too(r, settings):
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    assert controller.run_pass()
    good = settings.APP_SUPERVISOR_REDIS_URL

    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    clock.now += settings.APP_HEARTBEAT_TIMEOUT + 1
    assert not controller.run_pass()
    settings.APP_SUPERVISOR_REDIS_URL = good
    redis_client.reset()
    r.delete(contract.CONTROLLER_LEASE_KEY)  # expired meanwhile
    assert controller.run_pass()
    assert alerts() == []

    clock.now += settings.APP_HEARTBEAT_TIMEOUT
    assert controller.run_pass()
    assert [a.event for a in alerts()] == [ENVIRONMENT_OFFLINE]


# -- placements ------------------------------------------------------------------------------------------------


def report(r, state, error="", app="crm", env="env_a"):
    status.write(r, app, env, state, error=error)


def test_an_application_failing_is_alerted_once_while_it_stays_in_error(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    controller = Controller()
    look(controller)
    report(r, contract.ERROR, "migration 0002 failed: no such table")

    look(controller, Controller(), controller)
    report(r, contract.STARTING)  # a retry is not a recovery…
    look(controller)
    report(r, contract.ERROR, "migration 0002 failed again")  # …so its failure is the same error
    look(controller)

    [alert] = alerts()
    assert (alert.event, alert.environment, alert.app, alert.status) == (PLACEMENT_ERROR, "env_a", "crm", "error")
    assert alert.message == "crm failed on env_a; reported by env_a: migration 0002 failed: no such table"
    assert AlertState.objects.get(app="crm", environment="env_a").status == IN_ERROR


def test_an_application_failing_again_after_it_recovered_is_alerted_again(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    controller = Controller()
    report(r, contract.ERROR, "boom")
    look(controller)
    report(r, contract.RUNNING)
    look(controller)
    assert AlertState.objects.get(app="crm").status == RECOVERED

    report(r, contract.ERROR, "boom again")
    look(Controller())

    assert [a.message for a in alerts(PLACEMENT_ERROR)] == ["crm failed on env_a; reported by env_a: boom",
                                                       "crm failed on env_a; reported by env_a: boom again"]


def test_a_deleted_application_leaves_no_error_behind(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    report(r, contract.ERROR, "boom")
    controller = Controller()
    look(controller)

    app.delete()
    look(controller)

    assert AlertState.objects.get(app="crm").status == RECOVERED


# -- channels --------------------------------------------------------------------------------------------------


def test_each_alert_gets_one_delivery_per_enabled_channel(r, settings):
    settings.APP_ALERT_WEBHOOKS = (HOOK, "https://other.test/in")
    AlertChannel.objects.create(name="ops", kind=WEBHOOK, url="https://ops.test/alerts")
    AlertChannel.objects.create(name="oncall", kind=EMAIL, email="oncall@example.com")
    AlertChannel.objects.create(name="old", kind=WEBHOOK, url="https://old.test/", enabled=False)
    register_environment("env_a")
    controller = Controller()
    look(controller)
    registry.withdraw(r, {"name": "env_a"})

    look(controller)

    [alert] = alerts()
    assert sorted(alert.deliveries.values_list("source", "kind", "target")) == [
        ("APP_ALERT_WEBHOOKS", "webhook", HOOK),
        ("APP_ALERT_WEBHOOKS", "webhook", "https://other.test/in"),
        ("oncall", "email", "oncall@example.com"),
        ("ops", "webhook", "https://ops.test/alerts"),
    ]


def test_with_no_channel_an_alert_is_still_recorded(r, settings):
    settings.APP_ALERT_WEBHOOKS = ()
    register_environment("env_a")
    controller = Controller()
    look(controller)
    registry.withdraw(r, {"name": "env_a"})

    look(controller)

    assert [a.event for a in alerts()] == [ENVIRONMENT_OFFLINE] and not Delivery.objects.exists()


def test_a_pass_looks_for_transitions_in_a_few_queries_whatever_the_number_of_environments(r):
    from django.test.utils import CaptureQueriesContext

    for i in range(30):
        register_environment(f"env_{i}")
    create_application("crm", ["env_0"])
    controller = Controller()
    look(controller)

    with CaptureQueriesContext(connection) as queries:
        assert controller.raise_alerts() is False

    assert len(queries) <= 4


def test_a_worker_stopped_on_purpose_is_alerted_only_if_it_stays_away_past_the_grace(r, settings):
    settings.APP_ALERT_STOP_GRACE = 120
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)
    registry.withdraw(r, {"name": "env_a"}, now=clock.now)

    clock.now += 119
    look(controller)
    assert alerts() == []
    clock.now += 2
    look(controller)
    [alert] = alerts()
    assert alert.event == ENVIRONMENT_OFFLINE and "its worker stopped" in alert.message


def test_a_worker_back_within_the_grace_raises_no_alert_at_all(r, settings):
    settings.APP_ALERT_STOP_GRACE = 120
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)
    registry.withdraw(r, {"name": "env_a"}, now=clock.now)
    clock.now += 60
    look(controller)
    register_environment("env_a", heartbeat_at=clock.now)
    clock.now += 200
    register_environment("env_a", heartbeat_at=clock.now)
    look(controller)
    assert alerts() == []


def test_an_unplanned_offline_is_alerted_only_once_it_has_lasted_app_alert_after_and_a_blip_not_at_all(settings):
    settings.APP_ALERT_AFTER = 60
    timeout = settings.APP_HEARTBEAT_TIMEOUT
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    clock.now += timeout + 59  # offline for 59 s
    look(controller)
    assert alerts() == []
    register_environment("env_a", heartbeat_at=clock.now)  # back: a blip, no alert, nor a recovery
    look(controller)
    assert alerts() == []


    clock.now += timeout + 61
    look(controller)
    [alert] = alerts()
    assert alert.event == ENVIRONMENT_OFFLINE
    register_environment("env_a", heartbeat_at=clock.now)
    look(controller)
    assert [a.event for a in alerts()] == [ENVIRONMENT_OFFLINE, ENVIRONMENT_ONLINE]  # that outage was alerted

