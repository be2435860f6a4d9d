"""Poison jobs: whatever a job in the queue holds, the agent drops it, reports it and goes on with the next one."""

import signal
import time

import pytest
import redis
from rq.results import Result

from exchange import channel, contract, registry
from exchange.channel import CommandJob
from exchange.redis_client import command_redis
from exchange.signing import SignedJSONSerializer
from workers import agent as agent_module
from workers.agent import Agent

from .factories import create_application, register_environment
from .processes import manage, runworker, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE_KEY = f"rq:queue:{contract.queue_name('env_a')}"


@pytest.fixture
def agent():
    register_environment("env_a")
    create_application("crm", ["env_a"])
    a = Agent("env_a", "http://env_a.test", "", 60)
    a.register()
    return a


def plain_redis():
    """A client of its own, as anyone who can write to Redis would have."""
    return redis.Redis(connection_pool=redis.ConnectionPool(**command_redis().connection_pool.connection_kwargs))


def plant(form):
    """Put a malformed job of FORM on env_a's queue; returns its id."""
    r = plain_redis()
    if form == "bad id":
        r.rpush(QUEUE_KEY, "bad.id")
        return "bad.id"
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    field, value = {"created_at": ("created_at", "yesterday"), "timeout": ("timeout", "forever"),
                    "status": ("status", "weird"), "enqueued_at": ("enqueued_at", "nope")}[form]
    r.hset(f"rq:job:{job_id}", field, value)
    return job_id


def assert_good_job_runs_after(agent):
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    assert agent.process_one(timeout=1)
    result = CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer).latest_result()
    assert result.type == Result.Type.SUCCESSFUL


@pytest.mark.parametrize("form", ["bad id", "created_at", "timeout", "status", "enqueued_at"])
def test_a_malformed_job_is_dropped_reported_and_survived(agent, form, r):
    job_id = plant(form)

    assert agent.process_one(timeout=1)  # taken, not raised

    conn = command_redis()
    assert conn.llen(QUEUE_KEY) == 0
    assert conn.llen(f"{QUEUE_KEY}:intermediate") == 0
    assert conn.zcard(f"rq:wip:{contract.queue_name('env_a')}") == 0
    entry = registry.read(r)["env_a"]
    assert job_id in entry["refusal"] and "malformed" in entry["refusal"]
    assert isinstance(entry["refusal_at"], float)
    assert_good_job_runs_after(agent)


def test_whoever_waits_on_a_malformed_job_gets_a_failure_at_once(agent):
    job_id = plant("status")
    agent.process_one(timeout=1)
    result = Result.fetch_latest(CommandJob(job_id, connection=command_redis(), serializer=SignedJSONSerializer),
                                 serializer=SignedJSONSerializer)
    assert result.type == Result.Type.FAILED and "malformed" in result.exc_string


def test_the_loop_lives_on_through_malformed_jobs(agent):
    for form in ("bad id", "timeout", "status"):
        plant(form)
    good = channel.enqueue("env_a", contract.PING, "crm")
    agent.run(once=True)  # would exit 1 through an exception before
    result = CommandJob.fetch(good, connection=command_redis(), serializer=SignedJSONSerializer).latest_result()
    assert result.type == Result.Type.SUCCESSFUL


def test_ten_thousand_junk_ids_cost_a_bounded_turn_each_and_the_command_behind_them_runs(agent, r):
    junk = [f"junk-{i}" for i in range(10_000)]
    for start in range(0, len(junk), 1000):
        plain_redis().rpush(QUEUE_KEY, *junk[start:start + 1000])
    good = channel.enqueue("env_a", contract.PING, "crm")

    assert agent.process_one(timeout=1)
    assert command_redis().llen(QUEUE_KEY) == len(junk) + 1 - agent_module.JUNK_PER_TURN  # one turn: a bounded part
    turns = 1
    job = CommandJob.fetch(good, connection=command_redis(), serializer=SignedJSONSerializer)
    while job.latest_result() is None and turns < 100:
        agent.heartbeat_if_due()  # what the loop does between two turns
        agent.process_one(timeout=1)
        turns += 1

    assert job.latest_result().type == Result.Type.SUCCESSFUL
    assert turns <= len(junk) / agent_module.JUNK_PER_TURN + 1
    refusal = registry.read(r)["env_a"]["refusal"]
    assert "no job behind this id" in refusal and "10000 since the agent started" in refusal
    assert command_redis().llen(f"{QUEUE_KEY}:intermediate") == 0


def test_an_unexpected_error_in_the_loop_is_logged_and_the_loop_goes_on(agent):
    calls = []

    def process_one(timeout):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("surprise")
        agent.request_stop()
        return False

    agent.process_one = process_one
    agent._sleep_unless_stopped = lambda seconds: None
    agent.run()
    assert len(calls) == 2


@pytest.mark.slow
def test_a_real_agent_survives_a_bad_job_id_and_still_answers(tmp_path, redis_url, r):
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        plain_redis().rpush(QUEUE_KEY, "bad.id")
        wait_for(lambda: "bad.id" in (registry.read(r)["env_a"].get("refusal") or ""), what="the refusal shown")
        assert agent.proc.poll() is None, agent.output()
        job_id = channel.enqueue("env_a", contract.PING, "crm")
        job = CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer)
        result = wait_for(lambda: job.latest_result(), timeout=15, what="the ping's answer")
        assert result.type == Result.Type.SUCCESSFUL, result.exc_string
        assert agent.proc.poll() is None
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0, agent.output()
    finally:
        agent.stop()


@pytest.mark.slow
def test_a_real_agent_flooded_with_junk_ids_keeps_heartbeating_and_runs_the_command_behind_them(tmp_path, redis_url,
                                                                                               r):
    env = worker_env("env_a", 15999, tmp_path, redis_url, APP_HEARTBEAT_INTERVAL=1)
    manage(["migrate", "-v0"], env)
    agent = runworker(env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "env_a" in registry.read(r), what="registration")
        junk = plain_redis()
        for start in range(0, 200_000, 10_000):
            junk.rpush(QUEUE_KEY, *(f"junk-{i}" for i in range(start, start + 10_000)))
        job_id = channel.enqueue("env_a", contract.PING, "crm")
        job = CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer)
        oldest = 0.0
        deadline = time.monotonic() + 120
        while job.latest_result() is None and time.monotonic() < deadline:
            oldest = max(oldest, time.time() - registry.read(r)["env_a"]["heartbeat_at"])
            time.sleep(0.1)

        result = job.latest_result()
        assert result is not None and result.type == Result.Type.SUCCESSFUL, agent.output()[-3000:]
        assert oldest < 2.5, f"a heartbeat {oldest:.1f} s old while the agent dropped junk (interval 1 s)"
        assert "since the agent started" in registry.read(r)["env_a"].get("refusal", ""), agent.output()[-3000:]
        assert agent.proc.poll() is None
    finally:
        agent.stop()
