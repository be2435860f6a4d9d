"""The worker agent's steps, called directly, with time controlled by a clock argument."""

import logging

import pytest

from exchange import contract, registry, status
from workers.agent import Agent, without_password

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_register_announces_name_urls_version_host_and_pid(r):
    Agent("env_a", "http://localhost:15000", "http://worker_a", 120).register()
    entry = registry.read(r)["env_a"]
    assert entry["url"] == "http://localhost:15000"
    assert entry["proxy_url"] == "http://worker_a"
    assert entry["version"] and entry["host"] and entry["pid"]


def test_proxy_url_defaults_to_the_url(r):
    Agent("env_a", "http://localhost:15000", "", 120).register()
    assert registry.read(r)["env_a"]["proxy_url"] == "http://localhost:15000"


def test_heartbeat_is_sent_every_interval_and_not_before(r):
    clock = Clock()
    agent = Agent("env_a", "http://a", "", 120, clock=clock)
    agent.register()
    clock.now += 119
    assert agent.heartbeat_if_due() is False
    clock.now += 1
    assert agent.heartbeat_if_due() is True
    assert registry.read(r)["env_a"]["heartbeat_at"] == clock.now


def test_a_heartbeat_held_up_by_a_hung_redis_is_sent_again_at_once(r, monkeypatch):
    clock = Clock()
    agent = Agent("env_a", "http://a", "", 120, clock=clock)
    agent.register()
    clock.now += 120
    stamped_at = clock.now
    real = registry.announce

    def hung(pipe, registration, now):  # stamped now; Redis answers 300 s later
        written = real(pipe, registration, now=now)
        clock.now += 300
        return written

    monkeypatch.setattr(registry, "announce", hung)
    assert agent.heartbeat_if_due() is True
    monkeypatch.setattr(registry, "announce", real)
    assert registry.read(r)["env_a"]["heartbeat_at"] > stamped_at + 299


def test_deregister_marks_the_environment_stopped(r):
    agent = Agent("env_a", "http://a", "", 120)
    agent.register()
    agent.deregister()
    assert registry.read(r)["env_a"]["stopped_at"] is not None


def test_run_once_registers_runs_queued_commands_and_deregisters(r):
    from exchange import channel

    register_environment("env_a")
    create_application("crm", ["env_a"])
    channel.enqueue("env_a", contract.PING, "crm")
    agent = Agent("env_a", "http://a", "", 120)
    agent.run(once=True)
    assert agent.queue.count == 0
    assert registry.read(r)["env_a"]["stopped_at"] is not None


def test_starting_deletes_the_scratch_of_loads_a_killed_agent_left_and_nothing_else(r, settings, tmp_path):
    settings.APP_STORAGE_DIR = str(tmp_path)
    apps = tmp_path / "apps"
    (apps / ".load-crm-x1y2").mkdir(parents=True)
    (apps / ".load-crm-x1y2" / "dump").write_bytes(b"SQLite format 3\x00" + b"\0" * 4096)
    (apps / "crm.sqlite3").write_bytes(b"the application's own database")
    Agent("env_a", "http://a", "", 120).run(once=True)
    assert sorted(p.name for p in apps.iterdir()) == ["crm.sqlite3"]


def test_stop_request_ends_the_loop_after_the_command_in_hand(r):
    agent = Agent("env_a", "http://a", "", 120)
    agent.process_one = lambda timeout: agent.request_stop() or True
    agent.run()  # returns: the flag was honoured
    assert registry.read(r)["env_a"]["stopped_at"] is not None


def test_restart_settles_a_start_the_previous_run_left_unfinished(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    from apps import cache

    cache.rebuild(r)
    status.write(r, "crm", "env_a", contract.STARTING)
    status.write(r, "erp", "env_a", contract.STOPPING)

    Agent("env_a", "http://a", "", 120).register()

    crm = status.read(r, "crm", "env_a")
    assert crm["state"] == contract.ERROR and "interrupted" in crm["error"]
    assert status.read(r, "erp", "env_a")["state"] == contract.STOPPED


def test_redis_outage_is_retried_at_most_a_second_apart_until_stopped(settings):
    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    from exchange import redis_client

    redis_client.reset()
    sleeps = []
    agent = Agent("env_a", "http://a", "", 120, sleep=sleeps.append)
    attempts = []

    def failing_register():
        attempts.append(1)
        if len(attempts) == 6:
            agent.request_stop()
        raise __import__("redis").ConnectionError("down")

    agent.register = failing_register
    agent._sleep_unless_stopped = lambda seconds: sleeps.append(seconds)
    agent.run()
    # Backs off quickly to one second and stays there: an agent is back within a second of Redis.
    assert sleeps[:6] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_an_agent_started_while_redis_is_away_retries_naming_the_url_without_its_password(settings, caplog):
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = "redis://:s3cret@127.0.0.1:1/0"
    from exchange import redis_client

    redis_client.reset()
    agent = Agent("env_a", "http://a", "", 120)  # RQ's worker would connect here; it must wait for run
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            agent.request_stop()

    agent._sleep_unless_stopped = sleep
    log = logging.getLogger("appsup.worker")  # "appsup" does not propagate to the root logger caplog listens on
    log.addHandler(caplog.handler)
    try:
        agent.run()
    finally:
        log.removeHandler(caplog.handler)

    assert sleeps == [0.25, 0.5, 1.0]
    assert "Redis unavailable at redis://:***@127.0.0.1:1/0" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://appsup:s3cret@redis/1", "rediss://appsup:***@redis/1"),
        ("redis://redis/0?password=s3cret&db=2", "redis://redis/0?password=***&db=2"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_redis_urls_are_logged_without_their_password(url, shown):
    assert without_password(url) == shown


def test_heartbeats_continue_while_a_long_command_runs(r, monkeypatch):
    import time as real_time

    from exchange import channel
    from workers import agent as agent_module

    monkeypatch.setattr(agent_module, "POLL_SECONDS", 0.05)
    register_environment("env_a")
    create_application("crm", ["env_a"])
    agent = Agent("env_a", "http://a", "", interval=0.1)
    agent.register()
    first = registry.read(r)["env_a"]["heartbeat_at"]
    agent.worker.execute_job = lambda job, queue: real_time.sleep(0.5)  # a command that takes a while
    channel.enqueue("env_a", contract.PING, "crm")

    assert agent.process_one(timeout=1)

    assert registry.read(r)["env_a"]["heartbeat_at"] > first
