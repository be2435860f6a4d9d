"""The supervisor's controller (runsupervisor), its steps called directly with a clock, against the real test Redis
and real worker agents running in threads."""

import time

import pytest
import redis
from django.utils import timezone

from apps import lifecycle
from apps.models import Application, Placement
from controller.lease import Lease
from controller.loop import Controller, backoff, plan
from controller.models import ControllerState
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import cache as config_cache
from exchange import contract, events, registry, status
from exchange.channel import queue_for

from .factories import ThreadAgent, create_application, hold_lock, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self, now=None):
        self.now = time.time() if now is None else now

    def __call__(self):
        return self.now


def states(app="crm"):
    return dict(Placement.objects.filter(application__name=app).values_list("environment__name", "state"))


def subscribed(r, channels=(contract.EVENTS_CHANNEL,)):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*channels)
    for _ in channels:
        pubsub.get_message(timeout=1)  # the subscription's confirmation
    return pubsub


def received(pubsub, wait=0.5, channels=False):
    """Every event published since, waiting WAIT seconds for stragglers; with CHANNELS, as (channel, event)."""
    found, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            event = events.decode(message["data"])
            found.append((message["channel"].decode(), event) if channels else event)
    return found


def desire(app, state):
    Application.objects.filter(name=app).update(desired_state=state)


# -- the lease -----------------------------------------------------------------------------------------------


def test_only_one_controller_holds_the_lease_and_another_takes_over_when_it_expires(r):
    first, second = Lease(r, holder="first", ttl=1), Lease(r, holder="second", ttl=1)

    assert first.hold() and not second.hold()
    assert first.hold()  # renewed by its holder
    assert second.current_holder() == "first"
    time.sleep(1.1)  # the holder died: it renews no more

    assert second.hold() and not first.hold()


def test_a_flushed_lease_is_competed_for_again(r):
    lease = Lease(r, holder="one", ttl=5)
    assert lease.hold()
    r.flushall()
    assert lease.hold() and lease.current_holder() == "one"


def test_a_holder_that_stopped_acting_on_a_redis_error_acts_again_as_soon_as_redis_answers(r, monkeypatch):
    controller = Controller()
    assert controller.run_pass()

    def hung(*args, **kwargs):
        raise redis.TimeoutError("Timeout reading from socket")

    with monkeypatch.context() as m:  # one pass meets a Redis that does not answer
        m.setattr(controller, "mirror", hung)
        assert controller.run_pass() is False
    assert not controller.lease.held

    assert controller.run_pass()  # its own lease, still in Redis: not a lease TTL (10 s) of doing nothing
    assert controller.lease.current_holder() == controller.lease.holder


def test_a_renewal_that_timed_out_here_but_reached_redis_keeps_the_lease(r):
    # Redis hung: the renewal's reply never came (a timeout here), but Redis carried it out once it resumed. What is
    # stored is this holder's newer value, not the one it last wrote: it renews and acts at once, rather than
    # waiting out its own lease (7.6 s in the fault drill before).
    from exchange.locks import SignedLock

    lease = Lease(r, holder="one", ttl=10)
    assert lease.hold()
    carried_out = SignedLock(r, contract.CONTROLLER_LEASE_KEY, contract.LEASE_LOCK, timeout=10)
    r.set(contract.CONTROLLER_LEASE_KEY, carried_out._value("one"), px=10_000)
    lease.held = False  # the pass that met the timeout stopped acting

    assert lease.hold() and lease.current_holder() == "one"
    lease.release()
    assert not r.exists(contract.CONTROLLER_LEASE_KEY)


def test_a_lease_taken_over_meanwhile_is_not_taken_back(r):
    first, second = Lease(r, holder="first", ttl=1), Lease(r, holder="second", ttl=5)
    assert first.hold()
    first.held = False  # as after a Redis error
    time.sleep(1.1)
    assert second.hold()

    assert not first.hold() and second.current_holder() == "second"


def test_a_standby_controller_does_nothing(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    Lease(r, holder="other", ttl=30).hold()
    r.delete(contract.CACHE_READY_KEY)

    assert Controller().run_pass() is False
    assert not config_cache.is_ready(r)


# -- the configuration cache -----------------------------------------------------------------------------------


def test_a_flushed_cache_is_rebuilt_from_the_database_in_one_pass(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    r.flushall()

    assert Controller().rebuild_cache_if_missing() is True
    assert config_cache.lookup(r, "crm")["environments"] == ["env_a"] and config_cache.lookup(r, "erp")
    assert Controller().rebuild_cache_if_missing() is False  # whole now


def test_a_partly_lost_cache_is_rebuilt(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    r.hdel(contract.APPS_KEY, "erp")  # the ready marker survived, one entry did not

    assert Controller().rebuild_cache_if_missing() is True
    assert config_cache.lookup(r, "erp") is not None


def test_a_rebuild_is_announced_so_that_processes_drop_what_they_cached(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    pubsub = subscribed(r)
    r.delete(contract.CACHE_READY_KEY)

    Controller().rebuild_cache_if_missing()

    assert {"type": "cache", "action": "rebuilt"} in received(pubsub)


# -- the mirror ------------------------------------------------------------------------------------------------


def test_heartbeats_and_reported_states_reach_the_database_only_through_the_mirror(r):
    register_environment("env_a", sync=False)
    assert not Environment.objects.exists()
    register_environment("env_b")
    create_application("erp", ["env_b"])
    status.write(r, "erp", "env_b", contract.RUNNING)

    assert Controller().mirror() is True

    assert set(Environment.objects.values_list("name", flat=True)) == {"env_a", "env_b"}
    assert states("erp") == {"env_b": contract.RUNNING}


def test_an_environment_whose_web_does_not_answer_is_degraded_with_the_reason(r):
    registry.announce(r, {"name": "env_a", "url": "http://a.test", "web_ok": False,
                          "problem": "the web process does not answer /healthz"})
    controller = Controller()
    controller.mirror()

    env = Environment.objects.get(name="env_a")
    assert env.status() == contract.DEGRADED and env.is_online()  # commands still run there
    assert "does not answer" in env.status_reason()


def test_a_change_of_environment_status_is_published_once(r):
    register_environment("env_a")
    controller = Controller()
    controller.mirror()
    pubsub = subscribed(r)
    registry.withdraw(r, {"name": "env_a"})

    controller.mirror()
    controller.mirror()

    flips = [e for e in received(pubsub) if e["type"] == "environment"]
    assert [(e["name"], e["status"]) for e in flips] == [("env_a", contract.OFFLINE)]


def test_heartbeats_and_mirrored_states_are_published_once_they_are_in_the_database(r):
    register_environment("env_a", heartbeat_at=time.time() - 5)
    create_application("crm", ["env_a"])
    controller = Controller()
    controller.mirror()
    pubsub = subscribed(r, (contract.EVENTS_CHANNEL, contract.HEARTBEATS_CHANNEL))
    register_environment("env_a", sync=False)  # a heartbeat
    status.write(r, "crm", "env_a", contract.RUNNING)

    controller.mirror()
    controller.mirror()  # nothing new: nothing published

    published = [(channel, e) for channel, e in received(pubsub, channels=True) if e["type"] in ("environment", "app")]
    assert [(channel, e["type"], e["name"]) for channel, e in published] == [
        (contract.HEARTBEATS_CHANNEL, "environment", "env_a"), (contract.EVENTS_CHANNEL, "app", "crm")]
    assert published[0][1]["status"] == contract.ONLINE
    assert states("crm") == {"env_a": contract.RUNNING}  # what a page re-reads on the event is there


def test_a_heartbeat_alone_is_announced_apart_and_any_other_change_of_an_environment_on_the_events_channel(r):
    # Request-path caches and the controller's own mirror listen to the events channel only: 10,000 heartbeats a
    # burst must not wake them, while a new address or a status change must.
    register_environment("env_a", heartbeat_at=time.time() - 5)
    controller = Controller()
    controller.mirror()
    pubsub = subscribed(r, (contract.EVENTS_CHANNEL, contract.HEARTBEATS_CHANNEL))

    register_environment("env_a", sync=False)  # a heartbeat, nothing else
    controller.mirror()
    register_environment("env_a", url="http://moved.test:8000", sync=False)  # the agent came back elsewhere
    controller.mirror()
    register_environment("env_b", sync=False)  # a new environment
    controller.mirror()

    published = [(channel, e["name"]) for channel, e in received(pubsub, channels=True) if e["type"] == "environment"]
    assert published == [(contract.HEARTBEATS_CHANNEL, "env_a"), (contract.EVENTS_CHANNEL, "env_a"),
                         (contract.EVENTS_CHANNEL, "env_b")]


def test_malformed_or_forged_registry_and_status_entries_change_nothing(r):
    from exchange import signing

    register_environment("env_a")
    create_application("crm", ["env_a"])
    r.hset(contract.ENVIRONMENTS_KEY, "env_x", signing.dumps({"name": "env_x", "url": "http://x.test",
                                                              "heartbeat_at": "soon"}, signer="env_x"))
    r.hset(contract.ENVIRONMENTS_KEY, "Bad Name", signing.dumps({"url": "http://x.test", "heartbeat_at": 1}))
    r.hset(contract.STATUSES_KEY, "crm/env_a", signing.dumps({"app": "crm", "environment": "env_a",
                                                              "state": "pwned-and-much-too-long", "at": 1}, signer="env_a"))
    controller = Controller()
    controller.mirror()
    r.hset(contract.STATUSES_KEY, "crm/env_a", '{"app": "crm", "environment": "env_a", "state": "running", "at": 9}')
    controller.mirror()

    assert not Environment.objects.filter(name__in=["env_x", "Bad Name"]).exists()
    assert registry_mirror.rejected_summary(r)["count"] == 2
    assert states() == {"env_a": contract.STOPPED}


def test_a_reported_state_reaches_the_database_at_the_next_pass_through_its_announcement(r, monkeypatch):
    from apps import mirror as status_mirror

    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    controller = Controller()
    controller.mirror()
    status.write(r, "crm", "env_a", contract.RUNNING)  # announced on the events channel, as workers do
    r.hset(contract.STATUSES_KEY, contract.status_field("erp", "env_a"),  # written without its announcement
           status.signing.dumps({"app": "erp", "environment": "env_a", "state": "running", "at": time.time()},
                                signer="env_a"))

    controller.mirror()
    assert (states("crm"), states("erp")) == ({"env_a": contract.RUNNING}, {"env_a": contract.STOPPED})

    monkeypatch.setattr(status_mirror, "FULL_READ_SECONDS", 0)  # the full read, due every few seconds
    controller.mirror()
    assert states("erp") == {"env_a": contract.RUNNING}


def test_an_unannounced_report_is_found_by_the_sweep_a_few_fields_a_pass(r, monkeypatch):
    from apps import mirror as status_mirror

    register_environment("env_a")
    create_application("erp", ["env_a"])
    for i in range(300):  # other reports: a hash Redis scans in several steps
        r.hset(contract.STATUSES_KEY, f"other{i}/env_a", status.signing.dumps(
            {"app": f"other{i}", "environment": "env_a", "state": "running", "at": time.time()}, signer="env_a"))
    controller = Controller()
    controller.mirror()
    r.hset(contract.STATUSES_KEY, contract.status_field("erp", "env_a"),  # written without its announcement
           status.signing.dumps({"app": "erp", "environment": "env_a", "state": "running", "at": time.time()},
                                signer="env_a"))
    monkeypatch.setattr(status_mirror, "FULL_READ_SECONDS", 0)
    monkeypatch.setattr(status_mirror, "SWEEP_COUNT", 20)

    controller.mirror()
    assert controller._seen_statuses.sweep is not None  # a few fields a pass, not the whole hash at once
    for _ in range(100):
        controller.mirror()

    assert states("erp") == {"env_a": contract.RUNNING}


def test_an_announcement_of_a_forged_report_changes_nothing(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    controller = Controller()
    controller.mirror()
    r.hset(contract.STATUSES_KEY, "crm/env_a", '{"app": "crm", "environment": "env_a", "state": "running", "at": 9}')
    events.publish(r, events.PLACEMENT, app="crm", environment="env_a", state="running")
    events.publish(r, events.PLACEMENT, app=["not", "a", "name"], environment=None)

    controller.mirror()

    assert states("crm") == {"env_a": contract.STOPPED}


def test_reports_announced_while_the_controller_was_cut_off_are_mirrored_once_it_is_back(r):
    register_environment("env_a", heartbeat_at=time.time() - 3600)  # offline: the passes only mirror, never act
    create_application("crm", ["env_a"])
    controller = Controller()
    assert controller.run_pass()
    r.client_kill_filter(_type="pubsub")  # Redis drops the controller's subscription (a restart, a failover)
    status.write(r, "crm", "env_a", contract.RUNNING)  # its announcement is lost

    assert controller.run_pass()  # finds the subscription gone, subscribes again and reads every state

    assert states("crm") == {"env_a": contract.RUNNING}


def test_an_environment_row_deleted_behind_the_controller_is_mirrored_again_at_the_next_pass(r):
    register_environment("env_a")
    controller = Controller()
    controller.mirror()
    Environment.objects.filter(name="env_a").delete()  # its registration, unchanged, stays in Redis

    controller.mirror()

    assert Environment.objects.get(name="env_a").is_online()


def test_a_forged_entry_over_a_mirrored_registration_is_noticed_by_the_next_pass(r):
    register_environment("env_a")
    controller = Controller()
    controller.mirror()
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", '{"name": "env_a", "url": "http://evil.test", "heartbeat_at": 1}')

    controller.mirror()

    env = Environment.objects.get(name="env_a")
    assert env.url == "http://env_a.test:8000" and not env.is_online() and "not signed" in env.rejected


def test_health_is_recorded_for_pages_and_a_redis_outage_is_named(settings):
    controller = Controller()
    controller.record_health()
    assert ControllerState.current().redis_error == ""

    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    from exchange import redis_client

    redis_client.reset()
    assert Controller().run_pass() is False
    state = ControllerState.current()
    assert "Connection refused" in state.redis_error or "111" in state.redis_error
    assert state.redis_error_since is not None


# -- reconcile -------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_five_seconds_and_is_capped():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(50) == 300


def test_plan_starts_in_order_up_to_the_first_offline_environment():
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    register_environment("env_c")
    app = create_application("crm", ["env_a", "env_b", "env_c"])
    desire("crm", contract.RUNNING)
    app = Application.objects.with_placements().get(pk=app.pk)

    assert plan(app, timezone.now()) == (contract.START, ["env_a"], ["env_b"])


def test_plan_stops_wherever_it_can():
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    register_environment("env_c")
    app = create_application("crm", ["env_a", "env_b", "env_c"])
    Placement.objects.update(state=contract.RUNNING)
    app = Application.objects.with_placements().get(pk=app.pk)

    assert plan(app, timezone.now()) == (contract.STOP, ["env_a", "env_c"], ["env_b"])


def test_an_app_desired_running_is_started_where_it_is_not_running():
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm", ["env_a", "env_b"])
        Placement.objects.filter(environment__name="env_a").update(state=contract.RUNNING)  # a start cut off here
        desire("crm", contract.RUNNING)
        controller = Controller()

        assert controller.reconcile_one() is True

    assert states() == {"env_a": contract.RUNNING, "env_b": contract.RUNNING}
    assert Application.objects.get(name="crm").attempts == 0


def test_no_start_is_ever_sent_for_an_app_nobody_asked_to_run():
    register_environment("env_a")
    create_application("crm", ["env_a"])
    Placement.objects.update(state=contract.ERROR)  # desired stopped: the controller stops, never starts

    with ThreadAgent("env_a"):
        Controller().reconcile_one()

    assert states() == {"env_a": contract.STOPPED}


def test_an_app_desired_stopped_is_stopped_where_it_runs():
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        assert lifecycle.run(Application.objects.get(name="crm"), contract.START, timeout=60).ok
        desire("crm", contract.STOPPED)

        assert Controller().reconcile_one() is True

    assert states() == {"env_a": contract.STOPPED}


def test_an_offline_environment_is_waited_for_then_the_start_completes_when_it_returns(r):
    register_environment("env_a", heartbeat_at=0)
    app = create_application("crm", ["env_a"])
    outcome = lifecycle.run(app, contract.START, timeout=5)
    assert not outcome.ok and outcome.waiting_for == ["env_a"]
    controller = Controller()

    assert controller.reconcile_one() is False  # nothing sent to an offline environment, no failure counted
    app = Application.objects.get(name="crm")
    assert app.waiting_for == "env_a (offline)" and app.attempts == 0 and app.desired_state == contract.RUNNING
    assert queue_for("env_a").count == 0

    with ThreadAgent("env_a"):  # the environment is back
        controller.mirror()
        assert controller.reconcile_one() is True

    assert states() == {"env_a": contract.RUNNING}


def test_a_failed_start_is_retried_with_backoff_and_the_failure_is_kept_for_the_admin():
    clock = Clock()
    register_environment("env_a")
    create_application("crm", ["env_a"])
    desire("crm", contract.RUNNING)
    controller = Controller(clock=clock, timeout=1)  # nobody consumes env_a's queue: the start times out

    assert controller.reconcile_one() is True
    app = Application.objects.get(name="crm")
    assert app.attempts == 1 and "no answer from environment env_a" in app.last_error
    assert app.next_attempt_at.timestamp() == pytest.approx(clock.now + 5, abs=0.01)
    assert controller.reconcile_one() is False  # not due yet

    clock.now += 5
    assert controller.reconcile_one() is True
    app = Application.objects.get(name="crm")
    assert app.attempts == 2 and app.next_attempt_at.timestamp() == pytest.approx(clock.now + 10, abs=0.01)
    assert queue_for("env_a").count == 0  # what timed out was cancelled, never left to run later


def test_an_operator_changing_the_intent_under_the_controller_wins(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    desire("crm", contract.RUNNING)
    app = Application.objects.with_placements().get(pk=app.pk)
    desire("crm", contract.STOPPED)  # the operator stopped it after the controller read it

    assert lifecycle.converge(app, ["env_a"], timeout=1) is None
    assert queue_for("env_a").count == 0


def test_what_an_operator_did_since_the_controller_planned_is_not_sent_again(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    desire("crm", contract.RUNNING)
    app = Application.objects.with_placements().get(pk=app.pk)  # planned from the mirror: env_a stopped
    status.write(r, "crm", "env_a", contract.RUNNING)  # an operator's start finished in the meantime

    assert lifecycle.converge(app, ["env_a"], timeout=1) is None
    assert queue_for("env_a").count == 0  # no second start holding the lock against the operator's next command
    assert states("crm") == {"env_a": contract.RUNNING}


def test_an_operation_in_progress_is_left_alone_and_no_command_is_logged(r, caplog):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    desire("crm", contract.RUNNING)
    hold_lock("crm")

    with caplog.at_level("INFO"):
        assert Controller().reconcile_one() is False
    assert queue_for("env_a").count == 0 and Application.objects.get(name="crm").attempts == 0
    assert "start on" not in caplog.text  # nothing was sent: a restore holds the lock, say


def test_a_command_the_controller_sends_is_logged(r, caplog):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        desire("crm", contract.RUNNING)
        with caplog.at_level("INFO"):
            assert Controller().reconcile_one() is True
    assert "crm: start on env_a (desired running), by the controller" in caplog.text


def test_run_once_converges_everything_that_drifted():
    with ThreadAgent("env_a"):
        for name in ("crm", "erp"):
            create_application(name, ["env_a"])
            desire(name, contract.RUNNING)
        Controller().run(once=True)

    assert states("crm") == states("erp") == {"env_a": contract.RUNNING}
