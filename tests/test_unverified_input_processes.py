"""What an attacker who can write to Redis without the secret plants, against real processes (supervisor web,
runsupervisor, two worker webs and agents): registrations that make no rows, a planted controller lease and
application lock that stop nobody, and another job's signed answer that makes no command succeed."""

import os
import re
import signal
import threading
import time

import pytest
import redis as redis_lib
import requests

from exchange import contract

from .local_cluster import TOKEN, Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        for name in ("shop", "other"):
            created = c.api("POST", "apps/", json={"name": name, "environments": ["env_a"],
                                                   "admin_username": "boss", "admin_password": PASSWORD})
            assert created.status_code == 201, created.text
            assert c.api("POST", f"apps/{name}/start").status_code == 200
        yield c
    finally:
        c.stop()


@pytest.fixture
def plain(redis_url):
    return redis_lib.Redis.from_url(redis_url)


def test_five_hundred_unsigned_registrations_make_no_rows_and_are_counted(cluster, plain):
    before = len(cluster.environments())
    forged = '{"url": "http://127.0.0.1:9", "heartbeat_at": %f}' % time.time()
    plain.hset(contract.ENVIRONMENTS_KEY, mapping={f"junk{i}": forged for i in range(500)})

    def counted():
        scrape = requests.get(f"{cluster.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        found = re.search(r"^appsup_registrations_rejected (\S+)$", scrape.text, re.MULTILINE)
        return found is not None and float(found.group(1)) == 500

    wait_for(counted, timeout=15, what="the forged registrations counted")
    assert len(cluster.environments()) == before


def test_a_planted_lease_and_lock_stop_neither_the_controller_nor_the_operator(cluster, plain):
    plain.set(contract.CONTROLLER_LEASE_KEY, "mallory", ex=600)
    plain.delete(contract.CACHE_READY_KEY)
    wait_for(lambda: plain.exists(contract.CACHE_READY_KEY), timeout=10, what="the cache rebuilt by the controller")
    assert plain.get(contract.CONTROLLER_LEASE_KEY) != b"mallory"

    plain.set(contract.lock_key("shop"), "mallory", ex=600)
    began = time.monotonic()
    assert cluster.api("POST", "apps/shop/restart").status_code == 200
    assert time.monotonic() - began < 10  # not the 10 s wait for a held lock


def test_another_jobs_signed_answer_makes_no_command_succeed(cluster, plain):
    assert cluster.api("POST", "apps/other/stop").status_code == 200
    [old] = plain.keys("rq:results:stop-other-env_a-*")
    copied = [fields for _, fields in plain.xrange(old)]
    agent = cluster.agents["env_a"]
    os.kill(agent.pid, signal.SIGSTOP)  # only the copy can answer (for less than the heartbeat timeout, 4 s)
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(r=cluster.api("POST", "apps/shop/stop?timeout=3")))
    try:
        caller.start()
        jobs = wait_for(lambda: plain.keys("rq:job:stop-shop-env_a-*"), timeout=10, what="shop's stop queued")
        job = jobs[0].decode().split(":", 2)[2]
        for fields in copied:
            plain.xadd(f"rq:results:{job}", fields)
        caller.join(30)
        # Answered while shop was still served: nothing stopped it.
        port = cluster.worker_ports["env_a"]
        served = requests.get(f"http://127.0.0.1:{port}/apps/shop/admin/login/", timeout=10).status_code
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    reply = answer["r"]
    assert reply.status_code == 409, reply.text
    assert "not for this command" in reply.json()["error"]
    assert served == 200
