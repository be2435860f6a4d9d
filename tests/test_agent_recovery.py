"""The agent recovers by itself: commands cut off by a crash are answered, a dead holder's provision lock
expires within seconds, and the states it holds in its own database come back after Redis loses its data."""

import signal
import time

import pytest
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.results import Result

from exchange import cache as config_cache
from exchange import channel, contract, locks, registry, status
from exchange.channel import CommandJob
from exchange.locks import SignedLock
from exchange.redis_client import command_redis, supervisor_redis
from exchange.signing import SignedJSONSerializer
from workers import commands
from workers.agent import Agent
from workers.channel import CommandWorker
from workers.models import HostedState

from .factories import create_application, register_environment
from .processes import PYTHON, Process, manage, runworker, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def provision_held_by(app, holder, ttl=60):
    """APP's provision lock, held by HOLDER (a start job's id) as a genuine holder writes it."""
    lock = SignedLock(supervisor_redis(), contract.provision_lock_key(app), contract.PROVISION_LOCK, timeout=ttl,
                      thread_local=False)
    assert lock.acquire(blocking=False, token=holder)
    return lock


def start_payload(app):
    return {"admin_username": app.admin_username, "admin_password_hash": app.admin_password_hash}


def fetch(job_id):
    return CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer)


def take_as_a_previous_agent(queue):
    """Dequeue the next job and start it as another agent process would, then leave it there, as SIGKILL does."""
    worker = CommandWorker([queue], connection=command_redis(), name="env_a.gone-host.4242", environment="env_a",
                           is_placed=lambda app: True)
    job, _ = Queue.dequeue_any([queue], 1, connection=command_redis(), serializer=SignedJSONSerializer)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    return job


# -- interrupted commands ----------------------------------------------------------------------------------------


def test_a_command_left_started_by_a_killed_agent_is_failed_on_register(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.START, "crm", start_payload(app))
    agent = Agent("env_a", "http://a", "", 60)
    take_as_a_previous_agent(agent.queue)
    status.write(r, "crm", "env_a", contract.STARTING)
    started = StartedJobRegistry(queue=agent.queue)
    assert started.get_job_ids(cleanup=False) == [job_id]

    agent.register()

    result = fetch(job_id).latest_result()
    assert result.type == Result.Type.FAILED
    assert "interrupted: the agent of env_a stopped while running start crm" in result.exc_string
    assert fetch(job_id).get_status() == "failed"
    assert started.get_job_ids(cleanup=False) == []
    crm = status.read(r, "crm", "env_a")  # the settle-on-register behaviour stays
    assert crm["state"] == contract.ERROR and "interrupted" in crm["error"]


def test_the_agents_own_started_job_is_left_alone(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    agent = Agent("env_a", "http://a", "", 60)
    channel.enqueue("env_a", contract.PING, "crm")
    job, queue = Queue.dequeue_any([agent.queue], 1, connection=command_redis(), serializer=SignedJSONSerializer)
    agent.worker.prepare_execution(job)
    agent.worker.prepare_job_execution(job, remove_from_intermediate_queue=True)

    assert agent.fail_interrupted_jobs() == []
    assert StartedJobRegistry(queue=agent.queue).get_job_ids(cleanup=False) == [job.id]


# -- the states the worker holds ---------------------------------------------------------------------------------


def test_every_report_is_kept_in_the_workers_own_database_and_remove_forgets_it(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    commands.start("crm", "env_a", start_payload(app))
    held = HostedState.objects.get(app="crm")
    reported = status.read(r, "crm", "env_a")
    assert (held.state, held.at) == (contract.RUNNING, reported["at"])

    commands.remove("crm", "env_a", {})
    assert not HostedState.objects.filter(app="crm").exists()


def test_a_stop_sent_to_an_application_stopped_by_a_failed_upgrade_keeps_the_reason(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    commands.start("crm", "env_a", start_payload(app))
    # What workers.upgrade reports when a migration fails; the controller, not yet aware, sends a stop.
    commands._report("crm", "env_a", contract.STOPPED, error="upgrade failed: RuntimeError: refused")
    answer = commands.stop("crm", "env_a", {})
    assert answer["state"] == contract.STOPPED and "refused" in answer["error"]
    assert "refused" in status.read(r, "crm", "env_a")["error"]
    assert "refused" in HostedState.objects.get(app="crm").error

    # A running application's stop is clean.
    commands.start("crm", "env_a", start_payload(app))
    assert commands.stop("crm", "env_a", {})["error"] == ""


def test_after_a_flushall_one_loop_step_registers_again_and_publishes_the_held_states(r, monkeypatch):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    agent = Agent("env_a", "http://a", "", 60)
    agent.register()
    crm_job = channel.enqueue("env_a", contract.START, "crm", start_payload(app))
    channel.enqueue("env_a", contract.STOP, "erp")
    assert agent.process_one(timeout=1) and agent.process_one(timeout=1)
    assert fetch(crm_job).latest_result().return_value["state"] == contract.RUNNING
    before = {name: status.read(r, name, "env_a") for name in ("crm", "erp")}
    migrations = []
    monkeypatch.setattr("workers.provisioning.migrate", migrations.append)

    r.flushdb()  # as FLUSHALL would, on the test's own database (the quick suite shares the server)
    assert agent.ensure_registered() is True

    assert registry.read(r)["env_a"]["stopped_at"] is None
    for name in ("crm", "erp"):
        after = status.read(r, name, "env_a")
        assert (after["state"], after["at"]) == (before[name]["state"], before[name]["at"])
    assert migrations == []  # published, not started again
    assert agent.ensure_registered() is False  # and only once


def test_a_heartbeat_that_finds_the_registration_gone_makes_the_loop_publish_again(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    agent = Agent("env_a", "http://a", "", 0)
    agent.register()
    commands._report("crm", "env_a", contract.STOPPED)
    r.flushdb()  # as FLUSHALL would, on the test's own database (the quick suite shares the server)
    agent.heartbeat_if_due()  # what the heartbeat thread does while a long command runs
    assert agent.ensure_registered() is True
    assert status.read(r, "crm", "env_a")["state"] == contract.STOPPED


def test_a_held_state_of_an_app_no_longer_placed_here_is_forgotten_not_published(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    commands._report("crm", "env_a", contract.RUNNING)
    commands._report("gone", "env_a", contract.RUNNING)  # removed while the agent was away
    status.forget(r, "gone", ["env_a"])
    status.forget(r, "crm", ["env_a"])
    config_cache.replace_all(r, {"crm": {"environments": ["env_a"]}})

    Agent("env_a", "http://a", "", 60).register()

    assert status.read(r, "crm", "env_a")["state"] == contract.RUNNING
    assert status.read(r, "gone", "env_a") is None
    assert not HostedState.objects.filter(app="gone").exists()


def test_a_start_cut_off_is_settled_in_the_workers_own_record_too(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    commands._report("crm", "env_a", contract.STARTING)
    r.flushdb()  # as FLUSHALL would, on the test's own database (the quick suite shares the server)
    Agent("env_a", "http://a", "", 60).register()
    assert HostedState.objects.get(app="crm").state == contract.ERROR
    assert status.read(r, "crm", "env_a")["state"] == contract.ERROR


# -- the provision lock ------------------------------------------------------------------------------------------


def test_the_provision_lock_lives_seconds_not_a_job_timeout(r):
    with commands.provision_lock("crm"):
        assert 0 < r.ttl(contract.provision_lock_key("crm")) <= commands.PROVISION_LOCK_TTL
    assert not r.exists(contract.provision_lock_key("crm"))


def test_the_provision_lock_is_renewed_while_held(r):
    key = contract.provision_lock_key("crm")
    with commands.provision_lock("crm", ttl=1):
        holder = locks.holder_of(r.get(key), key)
        time.sleep(1.8)  # longer than its TTL
        assert holder is not None and locks.holder_of(r.get(key), key) == holder
    assert not r.exists(key)


def test_a_lock_its_holder_stopped_renewing_is_free_within_its_ttl(r):
    SignedLock(supervisor_redis(), contract.provision_lock_key("crm"), contract.PROVISION_LOCK,
               timeout=1).acquire()  # a holder that died
    began = time.monotonic()
    with commands.provision_lock("crm", ttl=1, wait=10):
        assert time.monotonic() - began < 2


def test_a_planted_provision_lock_is_broken_not_waited_for(r):
    r.set(contract.provision_lock_key("crm"), "planted")
    began = time.monotonic()
    with commands.provision_lock("crm", wait=10):
        assert time.monotonic() - began < 1
    assert locks.forgeries(r) == {contract.PROVISION_LOCK: 1}


def test_a_lock_held_by_a_live_holder_is_waited_for_and_then_refused(r):
    with commands.provision_lock("crm"):
        with pytest.raises(TimeoutError, match="another start holds crm's database lock .* waited 1 s"):
            with commands.provision_lock("crm", wait=1):
                pass


def test_a_start_gives_up_on_a_held_lock_within_seconds_so_other_commands_are_not_held_up(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    provision_held_by("crm", "start-crm-env_b-elsewhere")  # a holder elsewhere
    began = time.monotonic()
    answer = commands.start("crm", "env_a", {}, job_id="start-crm-env_a-1")
    assert time.monotonic() - began < commands.PROVISION_LOCK_WAIT + 1
    assert answer["state"] == contract.ERROR
    assert "another start holds crm's database lock" in answer["error"] and "tries again" in answer["error"]
    assert r.ttl(contract.provision_lock_key("crm")) > 0  # another holder's lock is never taken


def test_the_restarted_agent_releases_the_provision_lock_of_the_start_it_was_killed_in(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    job_id = channel.enqueue("env_a", contract.START, "crm", start_payload(app))
    agent = Agent("env_a", "http://a", "", 60)
    take_as_a_previous_agent(agent.queue)
    key = contract.provision_lock_key("crm")
    provision_held_by("crm", job_id, ttl=commands.PROVISION_LOCK_TTL)  # what the killed start held
    other = provision_held_by("erp", "start-erp-env_b-other")  # someone else's

    agent.register()

    assert not r.exists(key)
    assert r.get(contract.provision_lock_key("erp")) == other.local.token


def test_a_start_takes_its_job_id_as_the_provision_lock_token(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    held = []
    real_migrate = commands.provisioning.migrate
    commands.provisioning.migrate = lambda app: held.append(
        locks.holder_of(r.get(contract.provision_lock_key(app)), contract.provision_lock_key(app)))
    try:
        commands.start("crm", "env_a", {}, job_id="start-crm-env_a-abc")
    finally:
        commands.provisioning.migrate = real_migrate
    assert held == ["start-crm-env_a-abc"]


# -- real processes ----------------------------------------------------------------------------------------------


def wait_result(job_id, timeout):
    job = fetch(job_id)
    return wait_for(lambda: job.latest_result(), timeout=timeout, what=f"the answer to {job_id}")


@pytest.mark.slow
def test_a_lock_holder_killed_outright_frees_the_start_within_seconds(tmp_path, redis_url, r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    holder = Process([PYTHON, "manage.py", "shell", "-c",
                      "import time\nfrom workers.commands import provision_lock\n"
                      "with provision_lock('crm'):\n    print('held', flush=True)\n    time.sleep(600)"],
                     env, tmp_path / "holder.log")
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "held" in holder.output(), what="the lock held", timeout=30)
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        holder.signal(signal.SIGKILL)
        holder.wait(10)
        killed_at = time.monotonic()
        # Until the lock expires, a start gives up within seconds, saying why (the controller tries again)…
        began = time.monotonic()
        result = wait_result(channel.enqueue("env_a", contract.START, "crm", start_payload(app)), timeout=40)
        assert result.return_value["state"] == contract.ERROR, result.return_value
        assert "another start holds crm's database lock" in result.return_value["error"]
        assert time.monotonic() - began < commands.PROVISION_LOCK_WAIT + 3
        # …and once it has expired, the start goes through.
        wait_for(lambda: not r.exists(contract.provision_lock_key("crm")), timeout=commands.PROVISION_LOCK_TTL + 2,
                 what="the dead holder's lock expired")
        result = wait_result(channel.enqueue("env_a", contract.START, "crm", start_payload(app)), timeout=40)
        assert result.type == Result.Type.SUCCESSFUL, result.exc_string
        assert result.return_value["state"] == contract.RUNNING, result.return_value
        assert time.monotonic() - killed_at < commands.PROVISION_LOCK_TTL + 10
    finally:
        holder.stop()
        agent.stop()


@pytest.mark.slow
def test_an_agent_killed_mid_start_and_started_again_holds_up_no_command(tmp_path, redis_url, r):
    register_environment("env_a")
    crm = create_application("crm", ["env_a"])
    erp = create_application("erp", ["env_a"])
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        key = contract.provision_lock_key("crm")
        channel.enqueue("env_a", contract.START, "crm", start_payload(crm))
        wait_for(lambda: r.exists(key), timeout=30, interval=0.005, what="crm's start under way")
        agent.signal(signal.SIGKILL)
        agent.wait(10)
        killed_at = time.monotonic()
        assert r.exists(key)  # the dead start's lock, 15 s from expiring by itself
        agent = runworker(env, tmp_path / "agent-again.log")
        # The start of crm again, and another application's behind it: both run at once.
        again = channel.enqueue("env_a", contract.START, "crm", start_payload(crm))
        other = channel.enqueue("env_a", contract.START, "erp", start_payload(erp))
        for job_id in (again, other):
            result = wait_result(job_id, timeout=40)
            assert result.type == Result.Type.SUCCESSFUL, result.exc_string
            assert result.return_value["state"] == contract.RUNNING, result.return_value
        took = time.monotonic() - killed_at
        assert took < commands.PROVISION_LOCK_TTL - 5, took
        print(f"\nagent killed mid-start: crm and erp running {took:.1f} s after the kill")
    finally:
        agent.stop()


@pytest.mark.slow
def test_after_flushall_a_real_agent_publishes_its_states_again_without_starting_anything(tmp_path, redis_url, r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=60)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        result = wait_result(channel.enqueue("env_a", contract.START, "crm", start_payload(app)), timeout=60)
        assert result.return_value["state"] == contract.RUNNING, result.exc_string
        before = status.read(r, "crm", "env_a")
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(contract.EVENTS_CHANNEL)

        r.flushdb()  # as FLUSHALL would, on the test's own database (the quick suite shares the server)
        flushed_at = time.monotonic()
        back = wait_for(lambda: status.read(r, "crm", "env_a"), timeout=5, what="the status published again")
        registration = wait_for(lambda: registry.read(r).get("env_a"), timeout=5, what="registration again")
        assert time.monotonic() - flushed_at < 2.5
        assert registration["stopped_at"] is None
        assert (back["state"], back["at"]) == (contract.RUNNING, before["at"])  # not started again
        states, deadline = [], time.monotonic() + 1
        while time.monotonic() < deadline:  # (get_message answers None for the subscription's own confirmation)
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                states.append(message["data"])
        assert states and not any(b'"starting"' in data for data in states)
        assert agent.proc.poll() is None
    finally:
        agent.stop()
