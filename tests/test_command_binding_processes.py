"""A replayed remove spares the application created again under the same name, end to end (docs/architecture.md,
"Command channel"): a real ``runworker`` on a real Redis, this test process as the supervisor.

The attacker writes to Redis without the secret: they saved the signed ``remove`` job (with drop_database) of an
application, and push it again once that application was deleted and created anew, at a moment when the worker
has no record of having run it (a new pod with new storage)."""

import sqlite3

import pytest
from django.conf import settings
from rq.results import Result

from apps import lifecycle
from environments import mirror as registry_mirror
from exchange import channel, contract, registry
from exchange.channel import CommandJob
from exchange.redis_client import command_redis, supervisor_redis
from exchange.signing import SignedJSONSerializer

from .conftest import free_port
from .factories import create_application
from .processes import manage, runworker_without_web_probe, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INTERVAL = 1


@pytest.fixture
def env_a(tmp_path, redis_url):
    if not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        pytest.skip("reads the hosted application's SQLite file")
    storage = tmp_path / "env_a"
    env = worker_env("env_a", free_port(), storage, redis_url, APP_HEARTBEAT_INTERVAL=INTERVAL)
    worker = {"env": env, "storage": storage, "agents": []}

    def start():
        manage(["migrate", "-v0"], env)
        agent = runworker_without_web_probe(env, tmp_path / f"env_a-agent-{len(worker['agents'])}.log")
        worker["agents"].append(agent)
        pid = agent.pid
        wait_for(lambda: (registry.read(supervisor_redis()).get("env_a") or {}).get("pid") == pid,
                 what="the agent's registration")
        registry_mirror.sync(supervisor_redis())
        return agent

    worker["start"] = start
    try:
        yield worker
    finally:
        for agent in worker["agents"]:
            agent.stop()


def superusers(storage, app):
    with sqlite3.connect(storage / "apps" / f"{app}.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT username FROM auth_user WHERE is_superuser = 1")]


def _job(job_id):
    return CommandJob(id=job_id, connection=command_redis(), serializer=SignedJSONSerializer)


def test_a_replayed_remove_spares_the_application_created_again_after_the_worker_lost_its_memory(env_a, r):
    agent = env_a["start"]()
    first = create_application("crm", ["env_a"], admin_username="boss")
    assert lifecycle.run(first, contract.START, timeout=60).ok
    removed = lifecycle.remove(first, drop_database=True, timeout=120)  # the job stays unexpired for 2 minutes
    assert removed.ok, removed.failure
    [remove_job] = [key.decode().split(":", 2)[2] for key in r.scan_iter("rq:job:remove-crm-env_a-*")]
    saved = r.hgetall(f"rq:job:{remove_job}")  # what the attacker keeps: the signed job, as Redis holds it
    assert not (env_a["storage"] / "apps" / "crm.sqlite3").exists()

    second = create_application("crm", ["env_a"], admin_username="newboss")
    assert lifecycle.run(second, contract.START, timeout=60).ok
    assert superusers(env_a["storage"], "crm") == ["newboss"]

    # A new pod with new storage: the worker has no record of the commands it ran.
    agent.stop()
    (env_a["storage"] / "worker.sqlite3").unlink()
    env_a["start"]()

    answers = r.xlen(Result.get_key(remove_job))
    r.delete(f"rq:job:{remove_job}")
    r.hset(f"rq:job:{remove_job}", mapping=dict(saved, status=b"queued"))
    r.rpush(f"rq:queue:{contract.queue_name('env_a')}", remove_job)
    wait_for(lambda: r.xlen(Result.get_key(remove_job)) > answers, timeout=30, what="the replayed job's answer")

    assert (env_a["storage"] / "apps" / "crm.sqlite3").exists()
    assert superusers(env_a["storage"], "crm") == ["newboss"]  # its database and its data are still there
    refused = channel.open_failure(Result.fetch_latest(_job(remove_job), serializer=SignedJSONSerializer).exc_string)
    assert "issued for an earlier application of that name" in refused["error"]
    assert remove_job in registry.read(supervisor_redis())["env_a"]["refusal"]

