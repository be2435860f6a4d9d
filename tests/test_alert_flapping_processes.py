"""Flapping end to end: a local cluster of real processes (supervisor web, two ``runsupervisor`` controllers, two
workers), APP_ALERT_WEBHOOKS pointing at a real HTTP receiver. env_b's worker is stopped and started again and again;
the receiver gets its first changes, one ``environment.flapping``, nothing for the changes after it, and one alert
once env_b has kept its status for a whole window."""

import signal
import time

import pytest

from .alert_receiver import Receiver
from .local_cluster import Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WINDOW = 15


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def cluster(tmp_path, redis_server, receiver, own_databases):
    c = Cluster(tmp_path, redis_server.url, worker_web=True,
                supervisor_overrides={"APP_ALERT_WEBHOOKS": receiver.url, "APP_ALERT_STOP_GRACE": "0",
                                      "APP_ALERT_FLAP_COUNT": "3", "APP_ALERT_FLAP_WINDOW": str(WINDOW)})
    try:
        c.start()
        c.start_controller()
        yield c
    finally:
        c.stop()


def of_env_b(alerts):
    return [a["event"] for a in alerts if a["environment"] == "env_b"]


def test_a_worker_stopped_and_started_again_and_again_is_one_flapping_alert_then_one_when_steady(cluster, receiver):
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="both online")
    time.sleep(1.5)  # what starting up raised is delivered by now
    seen = len(receiver.alerts())

    for n in range(3):  # offline, online, offline (flapping), online, offline, online: six changes
        cluster.agents["env_b"].signal(signal.SIGTERM)
        cluster.agents["env_b"].wait(15)
        wait_for(lambda: cluster.status_of("env_b") == "offline", what=f"env_b offline ({n})")
        time.sleep(1)  # a controller pass sees it
        cluster.start_agent("env_b")
        wait_for(lambda: cluster.status_of("env_b") == "online", what=f"env_b online ({n})")
        time.sleep(1)
    flapping_done = time.monotonic()

    receiver.wait_for(lambda alerts: "environment.flapping" in of_env_b(alerts[seen:]), timeout=10,
                      what="env_b's flapping alert")
    time.sleep(max(0.0, WINDOW - 4 - (time.monotonic() - flapping_done)))
    assert of_env_b(receiver.alerts()[seen:]) == ["environment.offline", "environment.online",
                                                  "environment.flapping"]

    receiver.wait_for(lambda alerts: len(of_env_b(alerts[seen:])) == 4, timeout=WINDOW,
                      what="env_b's steady alert")
    time.sleep(2)  # more passes of either controller: nothing is sent twice
    alerts = [a for a in receiver.alerts()[seen:] if a["environment"] == "env_b"]
    assert [a["event"] for a in alerts] == ["environment.offline", "environment.online", "environment.flapping",
                                            "environment.online"], alerts
    assert "env_b is steady again: online" in alerts[-1]["message"]
