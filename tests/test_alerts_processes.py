"""Alerts end to end, as deployed: a local cluster of real processes (supervisor web, two ``runsupervisor``
controllers, two workers with web and agent) on a Redis server of the test's own, APP_ALERT_WEBHOOKS pointing at a
real HTTP receiver in the test process. An agent is killed outright and started again, with Redis restarted empty in
between; each transition reaches the receiver once."""

import signal
import time
from collections import Counter

import pytest

from .alert_receiver import Receiver
from .local_cluster import TIMEOUT, Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


GRACE = 8
AFTER = 2  # a killed agent is alerted once offline this long


@pytest.fixture
def cluster(tmp_path, redis_server, receiver, own_databases):
    c = Cluster(tmp_path, redis_server.url, worker_web=True,  # without its web, an environment is degraded
                supervisor_overrides={"APP_ALERT_WEBHOOKS": receiver.url, "APP_ALERT_STOP_GRACE": str(GRACE),
                                      "APP_ALERT_AFTER": str(AFTER)})
    try:
        c.start()
        c.start_controller()  # a second controller: one acts, and either may be the one
        yield c
    finally:
        c.stop()


def transitions(alerts):
    return [(a["event"], a["environment"]) for a in alerts]


def test_a_killed_agent_posts_one_offline_alert_and_its_return_one_online_even_across_a_redis_restart(
        cluster, receiver, redis_server):
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="both online")
    time.sleep(1.5)  # what starting up raised (a web not answering yet, then answering) is delivered by now
    seen = len(receiver.alerts())

    cluster.agents["env_b"].signal(signal.SIGKILL)
    receiver.wait_for(lambda alerts: ("environment.offline", "env_b") in transitions(alerts[seen:]),
                      timeout=TIMEOUT + AFTER + 5, what="env_b's offline alert")

    redis_server.kill()
    time.sleep(0.5)
    redis_server.start()  # empty: registrations, the lease and the configuration cache are gone
    wait_for(lambda: cluster.status_of("env_a") == "online", what="env_a registered again")
    time.sleep(2)  # several passes of whichever controller acts now

    cluster.start_agent("env_b")
    receiver.wait_for(lambda alerts: ("environment.online", "env_b") in transitions(alerts[seen:]),
                      timeout=15, what="env_b's online alert")
    time.sleep(3)  # more passes: nothing is sent twice

    alerts = receiver.alerts()[seen:]
    assert transitions(alerts) == [("environment.offline", "env_b"), ("environment.online", "env_b")], alerts
    assert "last heartbeat" in alerts[0]["message"]
    everything = receiver.alerts()
    assert not [id for id, n in Counter(a["id"] for a in everything).items() if n > 1], everything


def test_a_worker_stopped_on_purpose_and_back_within_the_grace_sends_nothing_and_one_that_stays_away_one_alert(
        cluster, receiver):
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="both online")
    time.sleep(1.5)
    seen = len(receiver.alerts())

    # A redeploy: SIGTERM (the agent deregisters), then the new one starts.
    cluster.agents["env_b"].signal(signal.SIGTERM)
    cluster.agents["env_b"].wait(15)
    wait_for(lambda: cluster.status_of("env_b") == "offline", what="env_b shown offline")
    cluster.start_agent("env_b")
    wait_for(lambda: cluster.status_of("env_b") == "online", what="env_b back")
    time.sleep(3)  # several controller passes
    assert transitions(receiver.alerts()[seen:]) == []

    # Stopped for good: alerted once the grace is over, not before.
    stopped_at = time.monotonic()
    cluster.agents["env_b"].signal(signal.SIGTERM)
    cluster.agents["env_b"].wait(15)
    time.sleep(max(0.0, GRACE - 2 - (time.monotonic() - stopped_at)))
    assert transitions(receiver.alerts()[seen:]) == []
    receiver.wait_for(lambda alerts: ("environment.offline", "env_b") in transitions(alerts[seen:]), timeout=10,
                      what="env_b's offline alert")
    alerts = receiver.alerts()[seen:]
    assert transitions(alerts) == [("environment.offline", "env_b")] and "its worker stopped" in alerts[0]["message"]
