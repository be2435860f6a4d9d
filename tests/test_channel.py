"""What a worker accepts from its queue: only allowlisted commands, as JSON, for applications placed on it."""

import pytest
from rq import Queue
from rq.job import Job
from rq.results import Result

from exchange import channel, contract
from exchange.channel import CommandJob
from exchange.redis_client import command_redis
from exchange.signing import SignedJSONSerializer
from workers.agent import Agent

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent():
    register_environment("env_a")
    a = Agent("env_a", "http://env_a.test", "", 60)
    a.register()
    return a


def outcome(job_id):
    job = CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer)
    return job.latest_result()


def test_allowed_command_for_a_placed_app_runs(agent):
    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    assert agent.process_one(timeout=1)
    result = outcome(job_id)
    assert result.type == Result.Type.SUCCESSFUL
    assert result.return_value["state"] == "pong"


def test_job_naming_another_function_is_refused_before_it_is_imported(agent, tmp_path):
    target = tmp_path / "created-by-job"
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=SignedJSONSerializer)
    job = queue.enqueue_call("os.makedirs", kwargs={"name": str(target)})

    assert agent.process_one(timeout=1)

    assert not target.exists()
    result = outcome(job.id)
    assert result.type == Result.Type.FAILED
    assert "is not a command" in result.exc_string


def test_pickled_job_is_refused(agent, tmp_path):
    target = tmp_path / "created-by-pickle"
    queue = Queue(contract.queue_name("env_a"), connection=command_redis())  # rq's default: pickle
    job = queue.enqueue_call("os.makedirs", kwargs={"name": str(target)})

    assert agent.process_one(timeout=1)

    assert not target.exists()
    assert CommandJob.fetch(job.id, connection=command_redis()).get_status() == "failed"


def test_unknown_command_is_refused(agent):
    create_application("crm", ["env_a"])
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=SignedJSONSerializer)
    job = queue.enqueue_call(
        contract.COMMAND_FUNCTION, kwargs={"command": "shell", "app": "crm", "environment": "env_a", "payload": {}}
    )
    agent.process_one(timeout=1)
    assert "'shell' is not an allowed command" in outcome(job.id).exc_string


def test_command_for_an_app_not_placed_here_is_refused(agent):
    register_environment("env_b")
    create_application("crm", ["env_b"])
    job_id = channel.enqueue("env_a", contract.START, "crm")
    agent.process_one(timeout=1)
    assert "not placed on environment 'env_a'" in outcome(job_id).exc_string


def test_command_addressed_to_another_environment_is_refused(agent):
    create_application("crm", ["env_a"])
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=SignedJSONSerializer)
    job = queue.enqueue_call(
        contract.COMMAND_FUNCTION, kwargs={"command": "stop", "app": "crm", "environment": "env_b", "payload": {}}
    )
    agent.process_one(timeout=1)
    assert "addressed to 'env_b'" in outcome(job.id).exc_string


def test_empty_queue_returns_after_the_poll_timeout(agent):
    assert agent.process_one(timeout=1) is False


def test_command_past_its_expiry_is_refused_as_stale(agent):
    import time

    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm", expires_at=time.time() - 5)
    assert agent.process_one(timeout=1)
    result = outcome(job_id)
    assert result.type == Result.Type.FAILED
    assert "stale" in result.exc_string


def test_command_before_its_expiry_runs(agent):
    import time

    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm", expires_at=time.time() + 60)
    agent.process_one(timeout=1)
    assert outcome(job_id).type == Result.Type.SUCCESSFUL


def test_expiry_that_is_not_a_time_is_refused(agent):
    create_application("crm", ["env_a"])
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=SignedJSONSerializer)
    job = queue.enqueue_call(contract.COMMAND_FUNCTION, job_id="ping-1", kwargs={
        "command": "ping", "app": "crm", "environment": "env_a", "payload": {}, "job_id": "ping-1",
        "issued_at": 0, "expires_at": "tomorrow"})
    agent.process_one(timeout=1)
    assert "carries no issue or expiry time" in outcome(job.id).exc_string


def test_a_refusal_is_shown_in_the_registration_at_once(agent):
    from exchange import registry

    register_environment("env_b")
    create_application("crm", ["env_b"])
    job_id = channel.enqueue("env_a", contract.START, "crm")
    agent.process_one(timeout=1)
    entry = registry.read(command_redis())["env_a"]
    assert job_id in entry["refusal"] and "not placed" in entry["refusal"]
    assert isinstance(entry["refusal_at"], float)


# -- signatures and the untrusted job hash ----------------------------------------------------------------------


def test_an_unsigned_command_is_refused_and_reported(agent, tmp_path):
    from rq.serializers import JSONSerializer

    create_application("crm", ["env_a"])
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=JSONSerializer)
    job = queue.enqueue_call(contract.COMMAND_FUNCTION, kwargs={
        "command": "start", "app": "crm", "environment": "env_a",
        "payload": {"admin_username": "mallory", "admin_password_hash": "x"}})

    assert agent.process_one(timeout=1)

    from exchange import registry

    assert "not a command signed by the supervisor (not signed)" in registry.read(command_redis())[
        "env_a"]["refusal"]
    assert Job.fetch(job.id, connection=command_redis(), serializer=JSONSerializer).get_status() == "failed"
    assert not (tmp_path / "apps").exists()


def test_a_command_signed_with_an_environments_key_is_refused_and_counted(agent, settings, r, tmp_path):
    """env_b's key commands no one: a start for env_a signed with it is refused (and so is one env_a signed)."""
    create_application("crm", ["env_a"])
    for signer in ("env_b", "env_a"):
        settings.APP_SIGNER = signer
        job_id = channel.enqueue("env_a", contract.START, "crm")
        settings.APP_SIGNER = "supervisor"

        agent.process_one(timeout=1)

        from exchange import registry

        refusal = registry.read(command_redis())["env_a"]["refusal"]
        assert f"not a command signed by the supervisor (signed by '{signer}', not by 'supervisor')" in refusal
        assert CommandJob(job_id, connection=command_redis()).get_status() == "failed"
    assert r.hget(contract.REFUSED_KEY, contract.REFUSED_COMMAND) == b"2"
    assert not (tmp_path / "apps").exists()


def test_a_command_signed_with_a_supervisor_key_workers_do_not_know_is_refused(agent, settings):
    from exchange import keys

    create_application("crm", ["env_a"])
    settings.APP_SIGNING_KEYS = dict(settings.APP_SIGNING_KEYS, supervisor=keys.generate()[0])
    job_id = channel.enqueue("env_a", contract.START, "crm")
    from tests.processes import signing_keys

    settings.APP_SIGNING_KEYS = signing_keys()

    agent.process_one(timeout=1)

    from exchange import registry

    assert "not one of this deployment's" in registry.read(command_redis())["env_a"]["refusal"]
    assert CommandJob(job_id, connection=command_redis()).get_status() == "failed"


def test_a_command_replayed_under_its_own_id_is_refused(agent, r):
    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.STOP, "crm")
    assert agent.process_one(timeout=1) and outcome(job_id).type == Result.Type.SUCCESSFUL

    r.rpush(f"rq:queue:{contract.queue_name('env_a')}", job_id)  # its signed data is still in Redis
    assert agent.process_one(timeout=1)

    assert "already ran here (a replay)" in outcome(job_id).exc_string


def test_a_ping_may_run_twice_it_changes_nothing(agent, r):
    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    assert agent.process_one(timeout=1)
    r.rpush(f"rq:queue:{contract.queue_name('env_a')}", job_id)
    assert agent.process_one(timeout=1)
    assert outcome(job_id).type == Result.Type.SUCCESSFUL


def test_a_signed_command_copied_under_another_id_is_refused(agent, r):
    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    r.copy(f"rq:job:{job_id}", "rq:job:forged-copy")
    r.delete(f"rq:queue:{contract.queue_name('env_a')}")
    r.rpush(f"rq:queue:{contract.queue_name('env_a')}", "forged-copy")

    assert agent.process_one(timeout=1)

    assert "signed for job" in outcome("forged-copy").exc_string


def test_callbacks_webhooks_and_dependents_planted_in_a_job_hash_are_never_honoured(agent, r, tmp_path):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    hits = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    create_application("crm", ["env_a"])
    job_id = channel.enqueue("env_a", contract.PING, "crm")
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    r.hset(f"rq:job:{job_id}", mapping={
        "success_callback_name": "os.abort",  # would end the test run if called
        "failure_callback_name": "os.abort",
        "stopped_callback_name": "os.abort",
        "webhooks": json.dumps([{"url": hook, "job_status": "finished"}, {"url": hook, "job_status": "failed"}]),
        "dependency_ids": json.dumps(["other-job"]),
    })
    victim = channel.enqueue("env_a", contract.STOP, "crm")  # a real command an attacker would like re-run
    r.lrem(f"rq:queue:{contract.queue_name('env_a')}", 0, victim)
    r.sadd(f"rq:job:{job_id}:dependents", victim)

    try:
        assert agent.process_one(timeout=1)
        assert outcome(job_id).type == Result.Type.SUCCESSFUL, outcome(job_id).exc_string
        assert hits == []
        assert agent.queue.count == 0  # the planted dependent was not enqueued
    finally:
        server.shutdown()
