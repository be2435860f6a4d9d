"""A command's answer is bound to its job, and a command to one incarnation of its application
(docs/architecture.md, "Command channel" and "Trust"). The attacker writes to Redis without the secret, copying old
signed values: another job's result, a remove that ran before the application was created again."""

import base64
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connections
from rq.results import Result
from rq.timeouts import TimerDeathPenalty

from apps import cache as app_cache
from apps import lifecycle
from apps.models import Application
from exchange import channel, contract, signing
from exchange.channel import CommandJob
from exchange.redis_client import command_redis
from exchange.signing import SignedJSONSerializer
from workers import provisioning
from workers.agent import Agent
from workers.channel import refusal
from workers.models import ExecutedCommand

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = f"rq:queue:{contract.queue_name('env_a')}"


@pytest.fixture
def agent():
    register_environment("env_a")
    a = Agent("env_a", "http://env_a.test", "", 60)
    a.register()
    return a


def outcome(job_id):
    return CommandJob.fetch(job_id, connection=command_redis(), serializer=SignedJSONSerializer).latest_result()


def answered(agent, app, command, payload=None, **kwargs):
    """Send COMMAND for APP (as the supervisor does, with its incarnation) and have the agent run it; the job id."""
    application = Application.objects.get(name=app)
    job_id = channel.enqueue("env_a", command, app, payload, generation=application.generation, **kwargs)
    assert agent.process_one(timeout=1)
    return job_id


def planting(r, prefix, fields, then=None):
    """A thread that waits for the supervisor's job whose id starts with PREFIX and writes FIELDS (a copied result
    stream entry) as its answer, then calls THEN."""

    def plant():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = [i.decode() for i in r.lrange(QUEUE, 0, -1) if i.decode().startswith(prefix)]
            if ids:
                r.xadd(Result.get_key(ids[0]), fields)
                if then is not None:
                    try:
                        then()
                    finally:
                        connections.close_all()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=plant, daemon=True)
    thread.start()
    return thread


# -- what a worker answers ---------------------------------------------------------------------------------------


def test_a_result_names_its_job_application_environment_and_command_inside_the_signature(agent):
    create_application("crm", ["env_a"])
    job_id = answered(agent, "crm", contract.STOP)
    result = outcome(job_id)
    assert result.type == Result.Type.SUCCESSFUL
    assert {k: result.return_value[k] for k in channel.ANSWER_BINDING} == {
        "job_id": job_id, "app": "crm", "environment": "env_a", "command": "stop"}


def test_a_refusal_is_sealed_with_the_job_it_answers(agent):
    register_environment("env_b")
    create_application("crm", ["env_b"])
    job_id = channel.enqueue("env_a", contract.START, "crm")
    agent.process_one(timeout=1)
    failure = channel.open_failure(outcome(job_id).exc_string)
    assert failure["job_id"] == job_id and failure["app"] == "crm" and failure["command"] == "start"
    assert "not placed on environment 'env_a'" in failure["error"]


# -- what the supervisor accepts ---------------------------------------------------------------------------------


def test_another_applications_stopped_result_copied_to_a_stop_job_is_not_success(agent, r):
    create_application("other", ["env_a"])
    crm = create_application("crm", ["env_a"])
    genuine = answered(agent, "other", contract.STOP)
    copied = r.xrange(Result.get_key(genuine))[-1][1]  # a signed {"state": "stopped", …} of job `genuine`
    planter = planting(r, "stop-crm-", copied)

    result = lifecycle.run(crm, contract.STOP, timeout=3)  # nobody runs crm's job: only the copy answers it

    planter.join()
    assert not result.ok
    assert result.failure.kind == lifecycle.FAILED
    assert "not for this command" in result.failure.error and genuine in result.failure.error


def test_an_environment_that_goes_offline_after_a_copied_answer_is_refused_still_names_the_refusal(agent, r):
    create_application("other", ["env_a"])
    crm = create_application("crm", ["env_a"])
    genuine = answered(agent, "other", contract.STOP)
    copied = r.xrange(Result.get_key(genuine))[-1][1]
    # Then the environment is gone (its agent stopped before its heartbeat timeout ran out, say).
    planter = planting(r, "stop-crm-", copied, then=lambda: r.hdel(contract.ENVIRONMENTS_KEY, "env_a"))

    result = lifecycle.run(crm, contract.STOP, timeout=5)

    planter.join()
    assert not result.ok
    assert "went offline" in result.failure.error
    assert "not for this command" in result.failure.error and genuine in result.failure.error


def test_the_api_answers_a_copied_stopped_result_with_a_failure_naming_it(agent, r, client, settings):
    settings.SUPERVISOR_API_TOKEN = "binding-token-0123456789abcdef0123"
    create_application("other", ["env_a"])
    create_application("crm", ["env_a"])
    genuine = answered(agent, "other", contract.STOP)
    planter = planting(r, "stop-crm-", r.xrange(Result.get_key(genuine))[-1][1])

    response = client.post("/api/apps/crm/stop?timeout=3", "{}", content_type="application/json",
                           headers={"Authorization": "Bearer binding-token-0123456789abcdef0123"})

    planter.join()
    assert response.status_code == 409, response.content
    assert response.json()["environment"] == "env_a"
    assert "refused an answer from environment env_a that was not for this command" in response.json()["error"]


def test_a_copied_failure_does_not_hide_the_real_answer(agent, r):
    crm = create_application("crm", ["env_a"])
    create_application("ghost", ["env_a"])
    r.hdel(contract.APPS_KEY, "ghost")  # so that a start of ghost is refused: a signed failure of another job
    refused = channel.enqueue("env_a", contract.START, "ghost")
    agent.process_one(timeout=1)
    copied = r.xrange(Result.get_key(refused))[-1][1]
    in_thread = Agent("env_a", "http://env_a.test", "", 60, death_penalty_class=TimerDeathPenalty)
    planter = planting(r, "stop-crm-", copied, then=lambda: in_thread.process_one(timeout=1))

    result = lifecycle.run(crm, contract.STOP, timeout=20)

    planter.join()
    assert result.ok, result.failure
    assert result.steps[0].state == contract.STOPPED


def test_a_signed_result_planted_in_the_job_hash_is_never_read(agent, r):
    create_application("other", ["env_a"])
    crm = create_application("crm", ["env_a"])
    genuine = answered(agent, "other", contract.STOP)
    signed_value = base64.b64decode(r.xrange(Result.get_key(genuine))[-1][1][b"return_value"])

    def plant():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = [i.decode() for i in r.lrange(QUEUE, 0, -1) if i.decode().startswith("stop-crm-")]
            if ids:
                r.hset(f"rq:job:{ids[0]}", mapping={"result": signed_value, "status": "finished"})
                return
            time.sleep(0.02)

    planter = threading.Thread(target=plant, daemon=True)
    planter.start()
    result = lifecycle.run(crm, contract.STOP, timeout=3)
    planter.join()

    assert not result.ok and result.failure.kind == lifecycle.TIMEOUT


# -- incarnations ------------------------------------------------------------------------------------------------


def test_an_application_created_again_under_its_name_is_another_incarnation(r):
    register_environment("env_a")
    first = create_application("crm", ["env_a"])
    assert len(first.generation) == 32 and app_cache.cache.lookup(r, "crm")["generation"] == first.generation
    first.delete()
    second = create_application("crm", ["env_a"])
    assert second.generation != first.generation
    assert app_cache.cache.lookup(r, "crm")["generation"] == second.generation


def test_applications_existing_before_incarnations_each_get_their_own():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("apps", "0003_placement_state_index")], [("apps", "0004_application_generation")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps.get_model("apps", "Application")
        old.objects.bulk_create(old(name=f"app{i}", admin_username="boss") for i in range(3))
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
        generations = list(executor.loader.project_state(after).apps.get_model("apps", "Application")
                           .objects.values_list("generation", flat=True))
    finally:  # the tests after this one need every later migration's tables and columns back
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert len(generations) == 3 and len(set(generations)) == 3 and all(len(g) == 32 for g in generations)


def job(command, generation, payload=None, expires_in=60):
    now = time.time()
    kwargs = {"command": command, "app": "crm", "environment": "env_a", "payload": payload or {}, "job_id": "j-1",
              "issued_at": now, "expires_at": now + expires_in, "generation": generation}
    data = signing.dumps([contract.COMMAND_FUNCTION, None, [], kwargs], signer=signing.SUPERVISOR)
    return SimpleNamespace(id="j-1", func_name=contract.COMMAND_FUNCTION, args=(), kwargs=kwargs, data=data)


def placed(app):
    return True


@pytest.mark.parametrize("command", [contract.START, contract.STOP, contract.RESTART, contract.REMOVE])
def test_a_command_for_an_earlier_incarnation_is_refused(command):
    reason = refusal(job(command, "a" * 32), "env_a", placed, generation_of=lambda app: "b" * 32)
    assert "issued for an earlier application of that name" in reason


def test_a_command_for_the_current_incarnation_runs():
    drop = {"drop_database": True}
    assert refusal(job(contract.REMOVE, "a" * 32, drop), "env_a", placed, generation_of=lambda app: "a" * 32) is None


def test_a_ping_is_for_no_incarnation():
    assert refusal(job(contract.PING, "a" * 32), "env_a", placed, generation_of=lambda app: "b" * 32) is None


@pytest.mark.parametrize("issued, current", [(None, "a" * 32), ("a" * 32, None), (None, None)])
def test_with_an_unknown_incarnation_only_a_remove_dropping_the_database_is_refused(issued, current):
    def decide(command, payload=None):
        return refusal(job(command, issued, payload), "env_a", placed, generation_of=lambda app: current)

    assert "must name the application's incarnation" in decide(contract.REMOVE, {"drop_database": True})
    assert decide(contract.REMOVE) is None
    assert decide(contract.STOP) is None and decide(contract.START) is None


def test_a_command_past_its_expiry_is_refused_whatever_its_incarnation():
    reason = refusal(job(contract.REMOVE, "a" * 32, {"drop_database": True}, expires_in=-1), "env_a", placed,
                     generation_of=lambda app: "a" * 32)
    assert "stale" in reason


def _recreate(r, agent, name):
    Application.objects.get(name=name).delete()
    app_cache.unpublish(r, name)
    create_application(name, ["env_a"], admin_username="newboss")
    answered(agent, name, contract.START, {"admin_username": "newboss", "admin_password_hash": "!"})
    assert provisioning.database_exists(name)


@pytest.mark.parametrize("expired", [False, True], ids=["unexpired", "expired"])
def test_a_replayed_remove_spares_the_database_of_the_application_created_again(agent, r, expired):
    create_application("crm", ["env_a"])
    answered(agent, "crm", contract.START, {"admin_username": "admin", "admin_password_hash": "!"})
    lifetime = 2 if expired else 120
    remove = answered(agent, "crm", contract.REMOVE, {"drop_database": True}, expires_at=time.time() + lifetime)
    assert not provisioning.database_exists("crm")
    _recreate(r, agent, "crm")
    ExecutedCommand.objects.all().delete()  # a new pod, new storage: no memory of having run it
    if expired:
        time.sleep(max(0.0, CommandJob.fetch(remove, connection=command_redis(),
                                             serializer=SignedJSONSerializer).kwargs["expires_at"] - time.time()))

    r.rpush(QUEUE, remove)  # its signed data is still in Redis, for an hour
    assert agent.process_one(timeout=1)

    assert provisioning.database_exists("crm")
    reason = channel.open_failure(outcome(remove).exc_string)["error"]
    assert ("stale" if expired else "issued for an earlier application of that name") in reason
