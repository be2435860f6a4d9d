"""``bin/drill``'s origin drills (bench.faults, ``origins``): a cluster of their own started the documented way with
APP_APPS_DOMAIN=apps.test and APP_SUPERVISOR_HOSTS=admin.test (127.0.0.1 too, for the drill's API calls), requests
sent to 127.0.0.1 with the Host a browser would send: an application on its own host, the supervisor's cookies
and headers, and a one-time sign-in link used twice and expired."""

import base64
import email.message
import json
import re
import time
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlsplit

import requests

from cluster.launcher import ADMIN_USERNAME
from exchange import contract, signing

from .cluster import Cluster, RedisServer, free_port

APP = "crm"
ENVIRON = {"APP_APPS_DOMAIN": "apps.test", "APP_SUPERVISOR_HOSTS": "admin.test,127.0.0.1"}


def _csrf(page):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def _jar_sends(set_cookies, set_on, asked_by):
    """The Cookie header a browser's cookie jar sends to ASKED_BY after SET_ON answered with SET_COOKIES."""
    jar, headers = CookieJar(), email.message.Message()
    for value in set_cookies:
        headers["Set-Cookie"] = value

    class Answer:
        def info(self):
            return headers

    jar.extract_cookies(Answer(), urllib.request.Request(set_on))
    request = urllib.request.Request(asked_by)
    jar.add_cookie_header(request)
    return request.get_header("Cookie") or ""


class Host:
    """Requests to the cluster's supervisor web with Host NAME:port, cookies kept."""

    def __init__(self, cluster, name):
        self.base = cluster.url
        self.host = f"{name}:{urlsplit(cluster.url).port}"
        self.session = requests.Session()

    def get(self, path, **headers):
        return self.session.get(self.base + path, headers={"Host": self.host, **headers}, allow_redirects=False,
                                timeout=30)

    def post(self, path, data):
        return self.session.post(self.base + path, data=data, allow_redirects=False, timeout=30, headers={
            "Host": self.host, "Origin": f"http://{self.host}", "Referer": f"http://{self.host}{path}"})


def drill(storage, row):
    """Start the cluster, run the three checks (each a ROW), stop it."""
    storage.mkdir()
    redis_server = RedisServer(free_port(), storage)
    cluster = Cluster(storage / "cluster", envs=1, environ={**ENVIRON, "APP_SUPERVISOR_REDIS_URL": redis_server.url})
    (storage / "cluster").mkdir()
    redis_server.start()
    try:
        cluster.start()
        created = cluster.api("POST", "apps/", json={"name": APP, "environments": ["env_a"],
                                                     "admin_username": "boss", "admin_password": cluster.password})
        assert created.status_code == 201, created.text
        assert cluster.api("POST", f"apps/{APP}/start").status_code == 200
        supervisor = Host(cluster, "admin.test")
        login = supervisor.get("/admin/login/")
        signed_in = supervisor.post("/admin/login/?next=/admin/", {
            "username": ADMIN_USERNAME, "password": cluster.password, "csrfmiddlewaretoken": _csrf(login),
            "next": "/admin/"})
        assert signed_in.status_code == 302, signed_in.text[:500]
        _own_host(cluster, login, row)
        _cookie(signed_in, row)
        _signin(cluster, supervisor, row)
    finally:
        cluster.stop()
        redis_server.kill()


def _own_host(cluster, supervisor_login, row):
    app = Host(cluster, f"{APP}.apps.test")
    page = app.get("/admin/login/")
    title = re.search(r"<title>(.*?)</title>", page.text)
    api = app.get("/api/apps/", Authorization=f"Bearer {cluster.token}")
    csp = supervisor_login.headers.get("Content-Security-Policy", "")
    xfo = supervisor_login.headers.get("X-Frame-Options", "")
    row(f"Host: {APP}.apps.test (APP_APPS_DOMAIN), the supervisor's API there, and its own pages' headers",
        f"login page {page.status_code} titled \"{title.group(1).replace('|', '-') if title else ''}\", "
        f"/api/apps/ {api.status_code}; "
        f"admin.test: CSP {'yes' if 'default-src' in csp else 'no'}, X-Frame-Options {xfo or 'none'}",
        "the application's pages; 404; CSP and DENY",
        page.status_code == 200 and title is not None and APP in title.group(1) and api.status_code == 404
        and "frame-ancestors 'none'" in csp and xfo == "DENY")


def _cookie(signed_in, row):
    set_cookies = signed_in.raw.headers.getlist("Set-Cookie")
    session = next((v for v in set_cookies if v.startswith("sessionid=")), "")
    attributes = {a.strip().split("=")[0].lower() for a in session.split(";")[1:]}
    to_app = "sessionid=" in _jar_sends(set_cookies, "http://admin.test/admin/", f"http://{APP}.apps.test/admin/")
    to_admin = "sessionid=" in _jar_sends(set_cookies, "http://admin.test/admin/", "http://admin.test/admin/")
    row("the supervisor's session cookie, set on admin.test, and an application's host",
        f"attributes {', '.join(sorted(attributes))}; a browser's jar sends it to admin.test: "
        f"{'yes' if to_admin else 'no'}, to {APP}.apps.test: {'yes' if to_app else 'no'}",
        "host-only, HttpOnly, SameSite; never sent to an application",
        bool(session) and "domain" not in attributes and {"httponly", "samesite"} <= attributes and to_admin
        and not to_app)


def _signin(cluster, supervisor, row):
    page = supervisor.get("/admin/apps/application/")
    pk = re.search(r"/admin/apps/application/(\d+)/signin/", page.text).group(1)
    confirm = supervisor.get(f"/admin/apps/application/{pk}/signin/?environment=env_a")
    link = urlsplit(supervisor.post(f"/admin/apps/application/{pk}/signin/", {
        "csrfmiddlewaretoken": _csrf(confirm), "environment": "env_a"}).headers["Location"])
    target = f"{link.path}?{link.query}"
    visitor = Host(cluster, link.hostname)
    first = visitor.get(target)
    index = visitor.get("/admin/")
    second = Host(cluster, link.hostname).get(target)
    claims = {"purpose": contract.SIGNIN_PURPOSE, "app": APP, "environment": "env_a", "operator": ADMIN_USERNAME,
              "superuser": True, "nonce": "drill-expired-0123456789", "expires": int(time.time()) - 1}
    sealed = signing.seal(json.dumps(claims).encode(), signer=signing.SUPERVISOR, key=cluster.supervisor_key)
    expired = Host(cluster, link.hostname).get(
        f"/_appsup/signin/?t={base64.urlsafe_b64encode(sealed).decode().rstrip('=')}")
    row("an \"Open as operator\" link, used twice, and one 1 s past its expiry",
        f"first: {first.status_code} → admin index {index.status_code} as "
        f"{'operator-' + ADMIN_USERNAME if 'operator-' + ADMIN_USERNAME in index.text else '?'}; "
        f"second: {second.status_code}; expired: {expired.status_code}",
        "signed in once; 403; 403",
        first.status_code == 302 and index.status_code == 200 and f"operator-{ADMIN_USERNAME}" in index.text
        and second.status_code == 403 and expired.status_code == 403)
