"""What a worker accepts from its queue: only allowlisted commands, as JSON, for applications placed on it."""

import pytest
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from exchange import channel, contract
from exchange.redis_client import command_redis
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
    job = Job.fetch(job_id, connection=command_redis(), serializer=JSONSerializer)
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
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=JSONSerializer)
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
    assert Job.fetch(job.id, connection=command_redis()).get_status() == "failed"


def test_unknown_command_is_refused(agent):
    create_application("crm", ["env_a"])
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=JSONSerializer)
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
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=JSONSerializer)
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
    queue = Queue(contract.queue_name("env_a"), connection=command_redis(), serializer=JSONSerializer)
    job = queue.enqueue_call(contract.COMMAND_FUNCTION, kwargs={
        "command": "ping", "app": "crm", "environment": "env_a", "payload": {}, "expires_at": "tomorrow"})
    agent.process_one(timeout=1)
    assert "'tomorrow' is not a time" in outcome(job.id).exc_string


def test_a_refusal_is_shown_in_the_registration_at_once(agent):
    from exchange import registry

    register_environment("env_b")
    create_application("crm", ["env_b"])
    job_id = channel.enqueue("env_a", contract.START, "crm")
    agent.process_one(timeout=1)
    entry = registry.read(command_redis())["env_a"]
    assert job_id in entry["refusal"] and "not placed" in entry["refusal"]
    assert isinstance(entry["refusal_at"], float)
