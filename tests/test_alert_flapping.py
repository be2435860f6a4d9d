"""Flapping (alerts.transitions): an environment that changes status APP_ALERT_FLAP_COUNT times within
APP_ALERT_FLAP_WINDOW gets one ``environment.flapping`` alert; its further changes are held (recorded, never sent)
until it keeps one status for a whole window, when one alert says it is steady again. With the real test Redis and
database and a clock."""

import time

import pytest

from alerts.models import ENVIRONMENT_FLAPPING, ENVIRONMENT_OFFLINE, ENVIRONMENT_ONLINE, Alert, AlertState, Delivery
from controller.loop import Controller
from exchange import contract, registry

from .factories import register_environment

pytestmark = pytest.mark.django_db(transaction=True)

HOOK = "http://alerts.test/hook"


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def _alerts(settings):
    settings.APP_ALERT_WEBHOOKS = (HOOK,)
    settings.APP_ALERT_STOP_GRACE = 0
    settings.APP_ALERT_FLAP_COUNT = 4
    settings.APP_ALERT_FLAP_WINDOW = 600


def look(*controllers):
    for controller in controllers:
        controller.mirror()
        controller.raise_alerts()


def flip(r, clock, controllers, times, step=30):
    """Stop and start env_a's worker TIMES changes in all, STEP seconds apart, each seen by CONTROLLERS."""
    for i in range(times):
        clock.now += step
        if i % 2 == 0:
            registry.withdraw(r, {"name": "env_a"})
        else:
            register_environment("env_a", heartbeat_at=clock.now)
        look(*controllers)


def sent():
    """(event, status) of every alert with a delivery, in order."""
    return [(a.event, a.status) for a in Alert.objects.filter(deliveries__isnull=False).distinct().order_by("pk")]


def test_the_fourth_change_in_the_window_is_one_flapping_alert_and_later_ones_are_held(r):
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    flip(r, clock, [controller], 9)

    assert sent() == [(ENVIRONMENT_OFFLINE, contract.OFFLINE), (ENVIRONMENT_ONLINE, contract.ONLINE),
                      (ENVIRONMENT_OFFLINE, contract.OFFLINE), (ENVIRONMENT_FLAPPING, contract.ONLINE)]
    [flapping] = Alert.objects.filter(event=ENVIRONMENT_FLAPPING)
    assert "env_a is flapping: 4 status changes within 600 s, now online" in flapping.message
    held = Alert.objects.filter(held=True)
    assert held.count() == 5 and not Delivery.objects.filter(alert__in=held).exists()
    assert AlertState.objects.get(environment="env_a").status == contract.OFFLINE  # the record follows every change


def test_changes_spread_wider_than_the_window_are_each_alerted(r):
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    flip(r, clock, [controller], 6, step=301)  # never 4 within 600 s

    assert [event for event, _ in sent()] == [ENVIRONMENT_OFFLINE, ENVIRONMENT_ONLINE] * 3
    assert not Alert.objects.filter(held=True).exists()


def test_a_flapping_environment_steady_for_a_window_is_alerted_once_with_its_status(r):
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    first, second = Controller(clock=clock), Controller(clock=clock)
    look(first)
    flip(r, clock, [first, second], 5)  # flapping from the 4th; the 5th (offline) is held
    assert sent()[-1][0] == ENVIRONMENT_FLAPPING

    clock.now += 599
    look(first, second)
    assert sent()[-1][0] == ENVIRONMENT_FLAPPING  # not a whole window yet
    clock.now += 2
    look(first, second, first)

    event, status = sent()[-1]
    assert (event, status) == (ENVIRONMENT_OFFLINE, contract.OFFLINE)
    [steady] = Alert.objects.filter(message__contains="steady again")
    assert "env_a is steady again: offline for 600 s after flapping since" in steady.message
    assert AlertState.objects.get(environment="env_a").flapping_since is None

    register_environment("env_a", heartbeat_at=clock.now)  # a change after that is news again
    clock.now += 1
    look(first)
    assert sent()[-1] == (ENVIRONMENT_ONLINE, contract.ONLINE)


def test_flap_count_zero_never_groups(r, settings):
    settings.APP_ALERT_FLAP_COUNT = 0
    clock = Clock()
    register_environment("env_a", heartbeat_at=clock.now)
    controller = Controller(clock=clock)
    look(controller)

    flip(r, clock, [controller], 8, step=1)

    assert len(sent()) == 8 and not Alert.objects.filter(held=True).exists()
