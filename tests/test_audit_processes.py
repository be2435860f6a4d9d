"""The audit log across real processes, as an operator and an attacker meet it: a supervisor web, its controller
and two workers talking through a real Redis. A staff user without permissions is refused and that refusal is in
``GET /api/audit/`` with its user; a start through a per-user token is there as that token's; the command line's
``startapp_sequential`` as the command line's; and after Redis is flushed, the controller's rebuild as the
controller's."""

import json

import pytest
import requests

from .local_cluster import TOKEN, Cluster
from .processes import manage, own_postgres_databases, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

APP = "auditcrm"  # hosted applications' databases are shared by the server: a name of this feature's own
DATABASES = ["appsup_audit_it_sup", "appsup_audit_it_env_a", "appsup_audit_it_env_b"]
PASSWORD = "a-long-enough-password-for-tests"


@pytest.fixture
def cluster(tmp_path, redis_url):
    with own_postgres_databases(DATABASES):
        c = Cluster(tmp_path, redis_url, worker_web=True, databases=DATABASES)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def shell(cluster, code):
    done = manage(["shell", "-c", code], cluster.supervisor_env)
    return done.stdout.strip().splitlines()[-1]  # after the shell's own notice of what it imported


def audit(cluster, **query):
    answer = cluster.api("GET", "audit/", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def logged_in(cluster, username):
    session = requests.Session()
    session.get(f"{cluster.base}/admin/login/", timeout=10)
    page = session.post(f"{cluster.base}/admin/login/", timeout=10, data={
        "username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"],
        "next": "/admin/"}, headers={"Referer": f"{cluster.base}/admin/login/"})
    assert page.status_code == 200 and "sessionid" in session.cookies, page.text[:500]
    return session


def test_refusals_token_starts_commands_and_the_controller_appear_with_their_actors(cluster, redis_url):
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="registration")
    created = cluster.api("POST", "apps/", json={"name": APP, "display_name": "Audit CRM", "environments": ["env_a"],
                                                 "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    token = shell(cluster, f"""
from django.contrib.auth.models import Permission, User
from apitokens.models import ApiToken
User.objects.create_user("intern", password="{PASSWORD}", is_staff=True)
deployer = User.objects.create_user("deployer", password="{PASSWORD}", is_staff=True)
deployer.user_permissions.add(Permission.objects.get(codename="operate_application"))
api_token = ApiToken(user=deployer, name="pipeline")
print(api_token.issue())
api_token.save()
""")

    # A staff user without permissions: 403, and the refusal is in the log with its user and request id.
    intern = logged_in(cluster, "intern")
    refused = intern.post(f"{cluster.base}/api/apps/{APP}/start", timeout=30, headers={
        "X-CSRFToken": intern.cookies["csrftoken"], "Referer": f"{cluster.base}/admin/", "X-Request-ID": "drill-1"})
    assert refused.status_code == 403 and refused.headers["X-Request-ID"] == "drill-1"
    [entry] = audit(cluster, request_id="drill-1")
    assert (entry["actor_kind"], entry["actor"], entry["action"], entry["target"], entry["outcome"],
            entry["status"]) == ("user", "intern", "application.start", f"application:{APP}", "refused", 403)

    # A start through a per-user token: the token's actor, its name and owner, never the token.
    started = requests.post(f"{cluster.base}/api/apps/{APP}/start", timeout=60,
                            headers={"Authorization": f"Bearer {token}"})
    assert started.status_code == 200, started.text
    [entry] = audit(cluster, actor_kind="token", action="application.start")
    assert entry["actor"].startswith("pipeline (appsup_") and entry["actor"].endswith(" of deployer")
    assert entry["outcome"] == "ok" and token not in json.dumps(entry)

    # The command line.
    done = manage(["startapp_sequential", APP, "--timeout", "60"], cluster.supervisor_env, check=False)
    assert done.returncode == 0, done.stderr
    [entry] = audit(cluster, actor_kind="command line")
    assert entry["action"] == "application.start" and entry["outcome"] == "ok"
    assert f"manage.py startapp_sequential {APP} --timeout 60" in entry["actor"]

    # Whoever can write to Redis flushes it: the controller rebuilds the cache, and says so.
    import redis

    redis.Redis.from_url(redis_url).flushall()
    wait_for(lambda: audit(cluster, actor_kind="controller", action="cache.rebuild"), timeout=20,
             what="the controller's rebuild in the audit log")
    [entry] = audit(cluster, actor_kind="controller", action="cache.rebuild")
    assert entry["actor"] and entry["outcome"] == "ok"

    # The bootstrap token's own create is there too, its password removed.
    [entry] = audit(cluster, action="application.create")
    assert entry["actor"] == "SUPERVISOR_API_TOKEN" and entry["parameters"]["body"]["admin_password"] == "[removed]"
    assert TOKEN not in json.dumps(audit(cluster))
