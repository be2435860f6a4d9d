import threading
import time

import pytest

from apps import lifecycle
from apps.models import Placement
from exchange import contract
from workers import provisioning

from .factories import PASSWORD, ThreadAgent, create_application, hold_lock, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_runs_each_environment_in_order_and_creates_the_database():
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        app = create_application("crm", ["env_b", "env_a"])
        seen = []
        outcome = lifecycle.run(app, contract.START, timeout=60, progress=seen.append)

    assert outcome.ok, outcome.steps
    assert [s.environment for s in seen] == ["env_b", "env_a"]
    assert all(s.state == contract.RUNNING for s in seen)
    assert provisioning.database_exists("crm")
    states = dict(Placement.objects.values_list("environment__name", "state"))
    assert states == {"env_a": contract.RUNNING, "env_b": contract.RUNNING}


def test_initial_superuser_gets_the_password_given_at_creation():
    from django.contrib.auth import get_user_model

    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"], admin_username="boss")
        assert lifecycle.run(app, contract.START, timeout=60).ok
    user = get_user_model().objects.using(provisioning.connect("crm")).get(username="boss")
    assert user.is_superuser and user.check_password(PASSWORD)
    provisioning.disconnect("crm")


def test_offline_environment_fails_before_anything_is_sent():
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)  # heartbeat in 1970: long past the timeout
    app = create_application("crm", ["env_b", "env_a"])

    outcome = lifecycle.run(app, contract.START, timeout=5)

    assert not outcome.ok
    assert outcome.failure.environment == "env_b"
    assert "offline" in outcome.failure.error
    assert [s.environment for s in outcome.steps] == ["env_b"]  # stopped at the first failure
    from exchange.channel import queue_for

    assert queue_for("env_b").count == 0 and queue_for("env_a").count == 0


def test_stop_then_start_again():
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        assert lifecycle.run(app, contract.START, timeout=60).ok
        stopped = lifecycle.run(app, contract.STOP, timeout=60)
        assert stopped.ok and stopped.steps[0].state == contract.STOPPED
        app.refresh_from_db()
        assert app.desired_state == contract.STOPPED
        assert lifecycle.run(app, contract.RESTART, timeout=60).ok
    assert Placement.objects.get().state == contract.RUNNING


def test_no_worker_consuming_means_a_timeout_naming_the_environment():
    register_environment("env_a")
    app = create_application("crm", ["env_a"])

    outcome = lifecycle.run(app, contract.START, timeout=1)

    assert not outcome.ok
    assert outcome.failure.environment == "env_a"
    assert "timeout" in outcome.failure.error
    placement = Placement.objects.get()
    assert placement.state == contract.ERROR and "env_a" in placement.error


def test_a_second_operation_on_the_same_app_is_refused_while_one_runs(monkeypatch, r):
    monkeypatch.setattr(lifecycle, "LOCK_WAIT", 0.3)
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    hold_lock("crm")

    with pytest.raises(lifecycle.OperationInProgress, match="crm"):
        lifecycle.run(app, contract.START, timeout=1)


def test_an_operators_command_waits_for_a_step_that_ends_soon(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    held = hold_lock("crm")  # the controller, finishing a step
    threading.Timer(0.5, held.release).start()

    with ThreadAgent("env_a"):
        outcome = lifecycle.run(app, contract.START, timeout=20)

    assert outcome.ok, outcome.failure


def test_a_lock_left_by_a_killed_supervisor_expires_within_the_lock_ttl(r):
    held = lifecycle._held("crm")
    held.__enter__()  # and never leaves it, as a process killed mid-operation

    assert 0 < r.ttl(contract.lock_key("crm")) <= lifecycle.LOCK_TTL <= 60


def test_an_operation_longer_than_the_lock_ttl_keeps_its_lock(monkeypatch, r):
    monkeypatch.setattr(lifecycle, "LOCK_TTL", 3)  # the wait polls every 2 s at most
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    ttls = []
    real_wait = lifecycle._wait

    def wait(*args, **kwargs):
        def renew_and_look():
            args[4]()
            ttls.append(r.pttl(contract.lock_key("crm")))

        return real_wait(*args[:4], renew_and_look, **kwargs)

    monkeypatch.setattr(lifecycle, "_wait", wait)

    outcome = lifecycle.run(app, contract.START, timeout=5)  # nobody consumes env_a's queue: waits 5 s

    assert outcome.failure.kind == lifecycle.TIMEOUT
    assert len(ttls) >= 3 and all(2000 < ttl <= 3000 for ttl in ttls)  # renewed each round, never expired
    assert r.get(contract.lock_key("crm")) is None  # released at the end


def test_a_command_nobody_took_is_cancelled_at_the_timeout_and_says_so(r):
    from exchange.channel import queue_for

    register_environment("env_a")  # registered, but no worker consumes its queue
    app = create_application("crm", ["env_a"])

    outcome = lifecycle.run(app, contract.START, timeout=1)

    assert outcome.failure.kind == lifecycle.TIMEOUT
    assert "did not start there and is cancelled" in outcome.failure.error
    assert queue_for("env_a", r).count == 0


def test_a_command_still_running_at_the_timeout_says_so_and_its_outcome_is_recorded_when_it_ends(monkeypatch, r):
    from exchange import status

    real_migrate, release = provisioning.migrate, threading.Event()

    def slow_migrate(name):
        release.wait(30)
        real_migrate(name)

    monkeypatch.setattr(provisioning, "migrate", slow_migrate)
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        outcome = lifecycle.run(app, contract.START, timeout=1)
        assert outcome.failure.kind == lifecycle.TIMEOUT
        assert "still running there, and its outcome will be shown when it ends" in outcome.failure.error
        release.set()
        deadline = time.monotonic() + 30
        while (status.read(r, "crm", "env_a") or {}).get("state") != contract.RUNNING:
            assert time.monotonic() < deadline, "the start that outlived its caller did not finish"
            time.sleep(0.1)


def test_failed_start_reports_error_with_traceback(monkeypatch):
    def broken_migrate(app):
        raise RuntimeError("disk full")

    monkeypatch.setattr(provisioning, "migrate", broken_migrate)
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        outcome = lifecycle.run(app, contract.START, timeout=60)
    assert not outcome.ok
    assert "disk full" in outcome.failure.error
    placement = Placement.objects.get()
    assert placement.state == contract.ERROR
    assert "RuntimeError: disk full" in placement.error
    assert "Traceback" in placement.traceback


def test_remove_deletes_the_application_and_keeps_its_database_unless_asked():
    from apps.models import Application

    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        assert lifecycle.run(app, contract.START, timeout=60).ok
        assert lifecycle.remove(app, timeout=60).ok
        assert provisioning.database_exists("crm")
        other = create_application("erp", ["env_a"])
        assert lifecycle.run(other, contract.START, timeout=60).ok
        assert lifecycle.remove(other, drop_database=True, timeout=60).ok
    assert not Application.objects.exists()
    assert not provisioning.database_exists("erp")


def test_remove_with_an_environment_offline_touches_no_environment():
    from apps.models import Application
    from exchange.channel import queue_for

    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    app = create_application("crm", ["env_a", "env_b"])

    outcome = lifecycle.remove(app, timeout=5)

    assert not outcome.ok and outcome.failure.environment == "env_b"
    assert queue_for("env_a").count == 0
    assert Application.objects.filter(name="crm").exists()
