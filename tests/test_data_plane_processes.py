"""The data plane end to end: a user works in a hosted application's admin through the supervisor's access proxy.
Real processes (supervisor web, two worker webs and agents), real Redis, real HTTP."""

import re
import signal

import pytest
import requests

from .local_cluster import Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    # env_a's advertised URL answers nothing: the supervisor must use its ENVIRONMENT_PROXY_URL.
    c = Cluster(tmp_path, redis_url, worker_web=True)
    c.worker_envs["env_a"].update(ENVIRONMENT_URL="http://127.0.0.1:9",
                                  ENVIRONMENT_PROXY_URL=f"http://127.0.0.1:{c.worker_ports['env_a']}")
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        for name, envs in (("crm", ["env_a"]), ("erp", ["env_a"]), ("both", ["env_a", "env_b"]), ("idle", ["env_a"])):
            created = c.api("POST", "apps/", json={"name": name, "environments": envs, "admin_username": "boss",
                                                   "admin_password": PASSWORD})
            assert created.status_code == 201, created.text
            if name != "idle":
                assert c.api("POST", f"apps/{name}/start").status_code == 200
        yield c
    finally:
        c.stop()


def csrf(page):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def login(session, base, app, username="boss", password=PASSWORD):
    url = f"{base}/apps/{app}/admin/login/?next=/apps/{app}/admin/"
    page = session.get(url, timeout=30)
    return session.post(url, data={"csrfmiddlewaretoken": csrf(page), "username": username, "password": password,
                                   "next": f"/apps/{app}/admin/"},
                        headers={"Origin": base, "Referer": url}, allow_redirects=False, timeout=30)


def test_work_in_a_hosted_admin_through_the_supervisor(cluster):
    base = cluster.base

    # Anonymous: redirected to that application's login page, on the supervisor's own host.
    anonymous = requests.get(f"{base}/apps/crm/admin/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"] in ("/apps/crm/admin/login/?next=/apps/crm/admin/",
                                             f"{base}/apps/crm/admin/login/?next=/apps/crm/admin/")

    # Log in (through ENVIRONMENT_PROXY_URL: env_a's ENVIRONMENT_URL is dead) and add a user with a POST.
    session = requests.Session()
    logged_in = login(session, base, "crm")
    assert logged_in.status_code == 302 and logged_in.headers["Location"].endswith("/apps/crm/admin/")
    assert {c.path for c in session.cookies} == {"/apps/crm/"}
    add_url = f"{base}/apps/crm/admin/auth/user/add/"
    added = session.post(add_url, data={"csrfmiddlewaretoken": csrf(session.get(add_url, timeout=30)),
                                        "username": "alice", "password1": "alice-pass-12345",
                                        "password2": "alice-pass-12345", "usable_password": "true"},
                         headers={"Origin": base, "Referer": add_url}, allow_redirects=False, timeout=30)
    assert added.status_code == 302, added.text[:2000]
    assert "alice" in session.get(f"{base}/apps/crm/admin/auth/user/", timeout=30).text

    # Another application knows neither that login nor that user.
    assert session.get(f"{base}/apps/erp/admin/", allow_redirects=False, timeout=30).status_code == 302
    assert login(session, base, "erp").status_code == 302
    erp_users = session.get(f"{base}/apps/erp/admin/auth/user/", timeout=30)
    assert erp_users.status_code == 200 and "boss" in erp_users.text and "alice" not in erp_users.text
    assert {c.name for c in session.cookies if c.path == "/apps/erp/"} >= {"sessionid_erp"}

    # A two-environment application offers the choice, and honours ?_env= (remembered in a cookie).
    choice = requests.get(f"{base}/apps/both/admin/", allow_redirects=False, timeout=30)
    assert "env_a" in choice.text and "env_b" in choice.text and "_env=env_b" in choice.text
    chooser = requests.Session()
    chosen = chooser.get(f"{base}/apps/both/admin/?_env=env_b", allow_redirects=False, timeout=30)
    assert chosen.status_code == 302 and "/apps/both/admin/login/" in chosen.headers["Location"]
    assert [c.path for c in chooser.cookies if c.name == "appsup_env"] == ["/apps/both/"]
    assert chooser.get(f"{base}/apps/both/admin/", allow_redirects=False, timeout=30).status_code == 302

    # Unknown app 404, stopped app 503, dead worker 502 naming the environment.
    assert requests.get(f"{base}/apps/nosuch/admin/", timeout=30).status_code == 404
    stopped = requests.get(f"{base}/apps/idle/admin/", timeout=30)
    assert stopped.status_code == 503
    cluster.webs["env_b"].signal(signal.SIGKILL)
    cluster.webs["env_b"].wait(10)
    dead = requests.get(f"{base}/apps/both/admin/?_env=env_b", timeout=30)
    assert dead.status_code == 502 and "env_b" in dead.text
