"""Sign-in from the supervisor on one host (no APP_APPS_DOMAIN): the admin's one-time link goes through the access
proxy at /apps/<name>/, signs the operator into the application's admin once, and never again. Real processes."""

import re
from urllib.parse import urlsplit

import pytest
import requests

from .local_cluster import Cluster
from .processes import manage, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
APP = "signapp"  # a name of this file's own: hosted PostgreSQL databases are shared by the server


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        manage(["createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com"],
               {**c.supervisor_env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
        wait_for(lambda: c.status_of("env_a") == "online", what="registration")
        created = c.api("POST", "apps/", json={"name": APP, "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert c.api("POST", f"apps/{APP}/start").status_code == 200
        yield c
    finally:
        c.stop()


def csrf(page):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def test_a_link_through_the_proxy_signs_the_operator_in_once(cluster):
    base = cluster.base
    operator = requests.Session()
    login = operator.get(f"{base}/admin/login/", timeout=30)
    operator.post(f"{base}/admin/login/?next=/admin/", data={
        "username": "root", "password": PASSWORD, "csrfmiddlewaretoken": csrf(login), "next": "/admin/"},
        headers={"Origin": base}, timeout=30)
    changelist = operator.get(f"{base}/admin/apps/application/", timeout=30).text
    signin_page = re.search(r'href="(/admin/apps/application/\d+/signin/\?environment=env_a)"', changelist).group(1)
    confirm = operator.get(base + signin_page, timeout=30)
    answer = operator.post(base + signin_page.partition("?")[0], data={
        "csrfmiddlewaretoken": csrf(confirm), "environment": "env_a"}, headers={"Origin": base},
        allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    link = urlsplit(answer.headers["Location"])
    assert not link.netloc and link.path == f"/apps/{APP}/_appsup/signin/"

    visitor = requests.Session()
    signed_in = visitor.get(f"{base}{link.path}?{link.query}", allow_redirects=False, timeout=30)
    assert signed_in.status_code == 302 and signed_in.headers["Location"].endswith(f"/apps/{APP}/admin/")
    index = visitor.get(f"{base}/apps/{APP}/admin/", allow_redirects=False, timeout=30)
    assert index.status_code == 200 and "operator-root" in index.text
    assert {c.path for c in visitor.cookies if c.name == f"sessionid_{APP}"} == {f"/apps/{APP}/"}

    again = requests.get(f"{base}{link.path}?{link.query}", allow_redirects=False, timeout=30)
    assert again.status_code == 403 and "used already" in again.text
