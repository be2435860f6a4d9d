"""A key per environment, tried from outside on real processes: holding env_b's key material only (its private key,
and Redis), a command addressed to env_a, a registration and a status for env_a, and a configuration entry are all
refused, and counted in /metrics. The environments are enrolled by command, trust on first use off."""

import json
import re
import time

import pytest
import redis
import requests
from rq.job import Job

from exchange import contract, events, signing

from .local_cluster import TOKEN, Cluster
from .processes import environment_key, environment_public_key, manage, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

APP = "keysapp"  # hosted application names of this file's own (hosted databases are shared on PostgreSQL)


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, supervisor_overrides={"APP_TRUST_ON_FIRST_USE": "false"})
    try:
        c.start()
        time.sleep(2)  # the agents have registered: not enrolled, so rejected
        assert c.environments() == {}
        for name in ("env_a", "env_b"):
            manage(["enrollenvironment", name, f"--public-key={environment_public_key(name)}"], c.supervisor_env)
        wait_for(lambda: c.status_of("env_a") in ("online", "degraded") and c.status_of("env_b") in (
            "online", "degraded"), what="both environments enrolled and online")
        yield c
    finally:
        c.stop()


def refused(cluster):
    text = requests.get(f"{cluster.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    counts = {kind: float(n) for kind, n in re.findall(r'^appsup_refused_signatures_total\{kind="(\w+)"\} (\S+)',
                                                       text, re.M)}
    return counts


class EnvB:
    """An RQ serializer as whoever holds env_b's key would write with."""

    @staticmethod
    def dumps(obj):
        return signing.dumps(obj, signer="env_b", key=environment_key("env_b"))

    @staticmethod
    def loads(data):
        return json.loads(signing.body_of(data))


def test_with_env_bs_key_only_nothing_of_env_a_nor_the_configuration_is_taken(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    created = cluster.api("POST", "apps/", json={"name": APP, "display_name": "Keys", "environments": ["env_a"],
                                                 "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    assert cluster.api("POST", f"apps/{APP}/start").status_code == 200
    key = environment_key("env_b")

    # A command for env_a, signed by env_b (and one claiming to be the supervisor's, with env_b's key).
    now = time.time()
    for signer in ("env_b", "supervisor"):
        job_id = f"remove-{APP}-env_a-{signer}"

        class Serializer(EnvB):
            @staticmethod
            def dumps(obj, signer=signer):
                return signing.dumps(obj, signer=signer, key=key)

        job = Job.create(contract.COMMAND_FUNCTION, connection=r, id=job_id, serializer=Serializer, kwargs={
            "command": "remove", "app": APP, "environment": "env_a", "job_id": job_id, "issued_at": now,
            "expires_at": now + 60, "generation": None, "payload": {"drop_database": False}})
        job.save()
        r.rpush(f"rq:queue:{contract.queue_name('env_a')}", job_id)
        wait_for(lambda: r.hget(job.key, "status") == b"failed", what=f"the command signed as {signer} refused")
    wait_for(lambda: refused(cluster).get("command") == 2, what="both refusals counted")

    # env_a's registration (to an address of theirs) and a status of the application on env_a, signed by env_b.
    before = refused(cluster)
    registration = {"name": "env_a", "url": "http://127.0.0.1:9", "proxy_url": "http://127.0.0.1:9",
                    "version": "1.0.0", "host": "x", "pid": 1, "heartbeat_at": time.time(), "seq": 2**62,
                    "stopped_at": None}
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", signing.dumps(registration, signer="env_b", key=key))
    entry = {"app": APP, "environment": "env_a", "state": "error", "error": "phish", "traceback": "",
             "at": time.time(), "seq": 2**62}
    r.hset(contract.STATUSES_KEY, contract.status_field(APP, "env_a"), signing.dumps(entry, signer="env_b", key=key))
    events.publish(r, events.PLACEMENT, app=APP, environment="env_a", state="error", error="phish", at=time.time())
    wait_for(lambda: refused(cluster).get("registration", 0) > before.get("registration", 0)
             and refused(cluster).get("status", 0) > before.get("status", 0), what="both counted")
    assert cluster.environments()["env_a"]["url"] != "http://127.0.0.1:9"
    # The forged registration shows env_a rejected (offline) until its agent writes its own again, within a second;
    # its application is then running as before, never in error.
    states = []
    wait_for(lambda: states.append(cluster.api("GET", f"apps/{APP}/").json()["statuses"]["env_a"]["state"])
             or states[-1] == contract.RUNNING, what="env_a back with its application running")
    assert contract.ERROR not in states and cluster.environments()["env_a"]["url"] != "http://127.0.0.1:9"

    # A configuration entry moving the application to env_b, signed as the supervisor with env_b's key.
    good = json.loads(signing.body_of(r.hget(contract.APPS_KEY, APP)))
    r.hset(contract.APPS_KEY, APP, signing.dumps(dict(good, environments=["env_b"]), signer="supervisor", key=key))
    wait_for(lambda: json.loads(signing.body_of(r.hget(contract.APPS_KEY, APP)))["environments"] == ["env_a"],
             what="the configuration entry repaired by the controller")
    wait_for(lambda: refused(cluster).get("config", 0) >= 1, what="the repair counted")
    assert cluster.api("GET", f"apps/{APP}/").json()["environments"] == ["env_a"]
