"""An origin per application and sign-in from the supervisor, with real processes: a supervisor web with
APP_APPS_DOMAIN=apps.test and APP_SUPERVISOR_HOSTS=admin.test, its controller, two worker webs and agents, real
Redis, real HTTP with Host headers (the names need not resolve: every request goes to 127.0.0.1)."""

import email.message
import re
import time
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlsplit

import pytest
import requests

from .local_cluster import TOKEN, Cluster
from .processes import manage, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
APP = "origcrm"  # a name of this file's own: hosted PostgreSQL databases are shared by the server
CUSTOM = f"{APP}.example.com"
# A custom domain must be among the workers' ALLOWED_HOSTS (the supervisor routes it from its database).
DOMAIN = {"APP_APPS_DOMAIN": "apps.test"}
WORKER = {**DOMAIN, "ALLOWED_HOSTS": f"localhost,127.0.0.1,.apps.test,{CUSTOM}"}


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True, supervisor_host="admin.test",
                supervisor_overrides={**DOMAIN, "APP_SUPERVISOR_HOSTS": "admin.test"},
                worker_overrides={"env_a": WORKER, "env_b": WORKER})
    try:
        c.start()
        manage(["createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com"],
               {**c.supervisor_env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        created = c.api("POST", "apps/", json={"name": APP, "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert c.api("POST", f"apps/{APP}/start").status_code == 200
        yield c
    finally:
        c.stop()


def csrf(page):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


class On:
    """Requests to the cluster's supervisor web with Host HOST:port, cookies kept per host as a browser would."""

    def __init__(self, cluster, host):
        self.base, self.host = cluster.base, f"{host}:{cluster.port}"
        self.session = requests.Session()

    def get(self, path, headers=None):
        return self.session.get(self.base + path, headers={"Host": self.host, **(headers or {})},
                                allow_redirects=False, timeout=30)

    def post(self, path, data, **kwargs):
        return self.session.post(self.base + path, data=data, allow_redirects=False, timeout=30, headers={
            "Host": self.host, "Origin": f"http://{self.host}", "Referer": f"http://{self.host}{path}"}, **kwargs)


def browser_jar_sends(set_cookies, set_on, asked_by):
    """The Cookie header a browser's jar sends to ASKED_BY after SET_ON answered with SET_COOKIES."""
    jar = CookieJar()
    headers = email.message.Message()
    for value in set_cookies:
        headers["Set-Cookie"] = value

    class Answer:
        def info(self):
            return headers

    jar.extract_cookies(Answer(), urllib.request.Request(set_on))
    request = urllib.request.Request(asked_by)
    jar.add_cookie_header(request)
    return request.get_header("Cookie") or ""


def test_each_application_has_its_own_origin_and_the_supervisor_its_own_hosts(cluster):
    supervisor = On(cluster, "admin.test")
    login_page = supervisor.get("/admin/login/")
    assert login_page.status_code == 200
    assert "default-src 'self'" in login_page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in login_page.headers["Content-Security-Policy"]
    assert login_page.headers["X-Frame-Options"] == "DENY"
    logged_in = supervisor.post("/admin/login/?next=/admin/", {
        "username": "root", "password": PASSWORD, "csrfmiddlewaretoken": csrf(login_page), "next": "/admin/"})
    assert logged_in.status_code == 302, logged_in.text[:1000]
    set_cookies = logged_in.raw.headers.getlist("Set-Cookie")
    session_cookie = next(v for v in set_cookies if v.startswith("sessionid="))
    attributes = [a.strip().lower() for a in session_cookie.split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    # A browser keeps it for admin.test alone: never sent to an application's host.
    assert "sessionid=" in browser_jar_sends(set_cookies, "http://admin.test/admin/", "http://admin.test/api/apps/")
    assert "sessionid=" not in browser_jar_sends(set_cookies, "http://admin.test/admin/", f"http://{APP}.apps.test/")

    # The application on its own host: its pages, with their links as on a host of its own.
    app = On(cluster, f"{APP}.apps.test")
    anonymous = app.get("/admin/")
    assert anonymous.status_code == 302 and anonymous.headers["Location"] == "/admin/login/?next=/admin/"
    page = app.get("/admin/login/?next=/admin/")
    assert page.status_code == 200 and 'action="/admin/login/?next=/admin/"' in page.text
    assert "Content-Security-Policy" not in page.headers  # its pages are the operator's own
    stylesheet = re.search(r'href="(/static/admin/css/base\.css)"', page.text).group(1)
    assert app.get(stylesheet).status_code == 200
    signed_in = app.post("/admin/login/?next=/admin/", {
        "username": "boss", "password": PASSWORD, "csrfmiddlewaretoken": csrf(page), "next": "/admin/"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/admin/"
    assert f"<title>Site administration | {APP}</title>" in app.get("/admin/").text

    # The supervisor answers on none of the application's paths: /admin/ there is the application's own admin,
    # the API and the events socket are not found, and the supervisor's session opens nothing there.
    assert "Environments" not in app.get("/admin/").text
    assert app.get("/api/apps/").status_code == 404
    assert app.get("/api/apps/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    intruder = requests.get(f"{cluster.base}/admin/", headers={
        "Host": f"{APP}.apps.test:{cluster.port}", "Cookie": "sessionid=" + supervisor.session.cookies["sessionid"]},
        allow_redirects=False, timeout=30)
    assert intruder.status_code == 302 and "/admin/login/" in intruder.headers["Location"]
    # A host that is neither: nothing; /healthz answers on any host.
    assert requests.get(f"{cluster.base}/admin/login/", timeout=30).status_code == 404
    assert requests.get(f"{cluster.base}/healthz", timeout=30).status_code == 200
    # A custom domain, given in the admin: the application answers there too, within a second.
    pk = _pk_from_changelist(supervisor)
    form = supervisor.get(f"/admin/apps/application/{pk}/change/")
    saved = supervisor.post(f"/admin/apps/application/{pk}/change/", {
        "csrfmiddlewaretoken": csrf(form), "display_name": APP, "custom_domains": CUSTOM, "concurrency": "",
        "request_timeout": ""})
    assert saved.status_code == 302, saved.text[:2000]
    custom = On(cluster, CUSTOM)
    wait_for(lambda: custom.get("/admin/").status_code == 302, what="the custom domain")
    assert custom.get("/admin/").headers["Location"] == "/admin/login/?next=/admin/"
    assert f"<title>Log in | {APP}</title>" in custom.get("/admin/login/").text
    assert On(cluster, "other.example.com").get("/admin/").status_code == 404

    # /apps/<name>/ on the supervisor's host leads to the application's own origin.
    moved = supervisor.get(f"/apps/{APP}/admin/?q=1")
    assert moved.status_code == 302
    assert moved.headers["Location"] == f"http://{APP}.apps.test:{cluster.port}/admin/?q=1"


def test_open_as_operator_signs_in_once_and_never_again(cluster):
    supervisor = On(cluster, "admin.test")
    login_page = supervisor.get("/admin/login/")
    supervisor.post("/admin/login/?next=/admin/", {
        "username": "root", "password": PASSWORD, "csrfmiddlewaretoken": csrf(login_page), "next": "/admin/"})
    pk = _pk_from_changelist(supervisor)
    confirm = supervisor.get(f"/admin/apps/application/{pk}/signin/?environment=env_a")
    assert confirm.status_code == 200 and "operator-root" in confirm.text
    answer = supervisor.post(f"/admin/apps/application/{pk}/signin/", {
        "csrfmiddlewaretoken": csrf(confirm), "environment": "env_a"})
    assert answer.status_code == 302
    link = urlsplit(answer.headers["Location"])
    assert link.netloc == f"{APP}.apps.test:{cluster.port}" and link.path == "/_appsup/signin/"
    target = f"{link.path}?{link.query}"

    app = On(cluster, f"{APP}.apps.test")
    signed_in = app.get(target)
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/admin/"
    index = app.get("/admin/")
    assert index.status_code == 200 and "operator-root" in index.text

    again = On(cluster, f"{APP}.apps.test").get(target)
    assert again.status_code == 403 and "used already" in again.text
    assert On(cluster, f"{APP}.apps.test").get("/admin/").status_code == 302  # that client is not signed in

    # A link for one application opens no other, even with its path on the other's host.
    assert On(cluster, "other.apps.test").get(target).status_code in (403, 404)


def _pk_from_changelist(supervisor):
    page = supervisor.get("/admin/apps/application/")
    return re.search(r"/admin/apps/application/(\d+)/signin/", page.text).group(1)


def test_a_link_is_refused_after_its_time(cluster, settings):
    """An expired token, planted as the supervisor would sign it (with the cluster's supervisor key)."""
    import base64

    from exchange import contract, signing

    claims = {"purpose": contract.SIGNIN_PURPOSE, "app": APP, "environment": "env_a", "operator": "root",
              "superuser": True, "nonce": "expired-nonce-0123456789", "expires": int(time.time()) - 1}
    token = base64.urlsafe_b64encode(signing.dumps(claims)).decode().rstrip("=")
    refused = On(cluster, f"{APP}.apps.test").get(f"/_appsup/signin/?t={token}")
    assert refused.status_code == 403 and "expired" in refused.text
