"""The export of the access proxy's routing (proxy.export, proxy.nginx, ``manage.py exportproxy``), read from the
test Redis as the proxy reads it: only verified, online environments with allowed addresses, only running
applications, nothing of a forged entry in the file, and a file that nginx accepts."""

import ipaddress
import json
import os
import shutil
import subprocess
import time

import pytest
import redis as redis_lib
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from exchange import cache, contract, registry, signing, status
from proxy import export, nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SUPERVISOR = export.supervisor_upstream("http://127.0.0.1:14000")


def register(r, name, url, proxy_url="", web_ok=None, heartbeat_at=None):
    entry = {"name": name, "url": url, "proxy_url": proxy_url, "version": "1.0.0", "host": "h", "pid": 1}
    if web_ok is not None:
        entry["web_ok"] = web_ok
    registry.announce(r, entry, now=heartbeat_at)


def configure(r, apps):
    """APPS: name -> [environments]; the cache written whole and marked complete, as the controller does."""
    cache.replace_all(r, {name: {"display_name": name.upper(), "environments": envs, "desired_state": "running"}
                          for name, envs in apps.items()})


def nginx_check(tmp_path, text):
    """`nginx -t` on TEXT included in a minimal nginx.conf under TMP_PATH; the completed process."""
    include = tmp_path / "appsup.conf"
    include.write_text(text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.standalone(include, tmp_path, listen_user_root=os.geteuid() == 0))
    return subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, timeout=30)


needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")


@pytest.fixture
def cluster_view(r):
    register(r, "env_a", "http://worker-a.example:15000", proxy_url="http://127.0.0.1:15001")
    register(r, "env_b", "http://127.0.0.1:16000")
    configure(r, {"crm": ["env_a"], "idle": ["env_a"], "shop": ["env_a", "env_b"], "half": ["env_a", "env_b"]})
    for app, env, state in (("crm", "env_a", "running"), ("idle", "env_a", "stopped"), ("shop", "env_a", "running"),
                            ("shop", "env_b", "running"), ("half", "env_a", "stopped"), ("half", "env_b", "running")):
        status.write(r, app, env, state)
    return r


def test_running_applications_are_routed_to_their_environments_and_the_rest_left_to_the_supervisor(cluster_view):
    plan = export.collect(cluster_view, SUPERVISOR)

    assert plan.single == {"crm": "env_a"}
    assert plan.chosen == {"shop": ["env_a", "env_b"], "half": ["env_b"]}
    a = plan.upstreams["env_a"]
    # The registered proxy URL is where requests go; both registered addresses are rewritten in Location headers.
    assert (a.name, a.addresses, a.origin.port) == ("appsup_env_env_a", ("127.0.0.1",), 15001)
    assert a.known == ("http://127.0.0.1:15001", "http://worker-a.example:15000")
    assert [(s.kind, s.name, s.reason) for s in plan.skipped] == [
        ("application", "idle", "not running: stopped on env_a")]

    text = nginx.render(plan)
    assert "    crm appsup_env_env_a;\n" in text
    assert '    "shop/env_b" appsup_env_env_b;\n' in text and '    "half/env_b" appsup_env_env_b;\n' in text
    assert '"half/env_a"' not in text and "idle appsup" not in text
    assert "server 127.0.0.1:15001;" in text and "server 127.0.0.1:16000;" in text
    assert "proxy_redirect http://worker-a.example:15000/ $appsup_public/;" in text
    assert "    listen 80;\n" in text and "client_max_body_size 0;" in text
    assert "#   application idle: not running: stopped on env_a" in text


def test_degraded_offline_stopped_and_unverified_environments_are_never_upstreams(r, settings):
    register(r, "env_ok", "http://127.0.0.1:15000")
    register(r, "env_degraded", "http://127.0.0.1:15001", web_ok=False)
    register(r, "env_late", "http://127.0.0.1:15002", heartbeat_at=time.time() - settings.APP_HEARTBEAT_TIMEOUT - 1)
    register(r, "env_gone", "http://127.0.0.1:15003")
    registry.withdraw(r, {"name": "env_gone"})
    r.hset(contract.ENVIRONMENTS_KEY, "env_unsigned", json.dumps({"name": "env_unsigned", "url": "http://127.0.0.1:1"}))
    apps = {f"on-{env.removeprefix('env_')}": [env] for env in
            ("env_ok", "env_degraded", "env_late", "env_gone", "env_unsigned", "env_never")}
    configure(r, apps)
    for app, (env,) in apps.items():
        status.write(r, app, env, "running")

    plan = export.collect(r, SUPERVISOR)

    assert plan.single == {"on-ok": "env_ok"} and list(plan.upstreams) == ["env_ok"]
    reasons = {(s.kind, s.name): s.reason for s in plan.skipped}
    assert reasons == {
        ("application", "on-degraded"): "not running: env_degraded is degraded",
        ("application", "on-late"): "not running: env_late is offline",
        ("application", "on-gone"): "not running: env_gone is offline",
        ("application", "on-unsigned"): "not running: env_unsigned is offline",
        ("application", "on-never"): "not running: env_never is offline",
        ("environment", "env_unsigned"): "its registration does not verify",
    }
    assert "127.0.0.1:1500" + "1" not in nginx.render(plan)


def test_addresses_are_checked_as_the_proxy_checks_them(r, settings):
    resolved = {"workers.internal": ["10.1.2.3", "169.254.169.254", "10.1.2.4"], "outside.example": ["192.0.2.7"]}

    def resolver(host, port):
        return resolved[host] if host in resolved else export.resolve(host, port)

    for name, url in (("env_local", "http://127.0.0.1:15000"), ("env_meta", "http://169.254.169.254"),
                      ("env_link", "http://169.254.10.10:80"), ("env_names", "http://workers.internal:8000"),
                      ("env_out", "https://outside.example"), ("env_path", "http://10.0.0.9:80/prefix"),
                      ("env_ftp", "ftp://10.0.0.9")):
        register(r, name, url)
    apps = {name.replace("env_", "app-"): [name] for name in
            ("env_local", "env_meta", "env_link", "env_names", "env_out", "env_path", "env_ftp")}
    configure(r, apps)
    for app, (env,) in apps.items():
        status.write(r, app, env, "running")

    settings.APP_PROXY_ALLOWED_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"),)
    plan = export.collect(r, SUPERVISOR, resolver=resolver)
    assert plan.single == {"app-names": "env_names"}
    # Only the allowed addresses, in the resolver's order: the first preferred, the others as backups.
    assert plan.upstreams["env_names"].addresses == ("10.1.2.3", "10.1.2.4")
    assert "server 10.1.2.3:8000;\n    server 10.1.2.4:8000 backup;" in nginx.render(plan)
    reasons = {s.name: s.reason for s in plan.skipped if s.kind == "environment"}
    assert "outside APP_PROXY_ALLOWED_NETWORKS" in reasons["env_local"]
    assert "cloud metadata address" in reasons["env_meta"]
    assert "outside APP_PROXY_ALLOWED_NETWORKS" in reasons["env_out"]
    assert "path" in reasons["env_path"] and "no http(s) address" in reasons["env_ftp"]

    settings.APP_PROXY_ALLOWED_NETWORKS = None  # the default policy: anything but link-local and metadata
    plan = export.collect(r, SUPERVISOR, resolver=resolver)
    assert sorted(plan.single) == ["app-local", "app-names", "app-out"]
    assert "link-local" in {s.name: s.reason for s in plan.skipped}["env_link"]
    text = nginx.render(plan)
    assert "map $appsup_upstream $appsup_scheme {\n    default http;\n    appsup_env_env_out https;\n}" in text
    assert "proxy_ssl_name $appsup_tls_name;" in text and "appsup_env_env_out outside.example;" in text


def test_forged_and_malformed_entries_put_nothing_of_theirs_in_the_file(r, redis_url, tmp_path):
    register(r, "env_a", "http://127.0.0.1:15000")
    configure(r, {"crm": ["env_a"]})
    status.write(r, "crm", "env_a", "running")
    plain = redis_lib.Redis.from_url(redis_url)  # what anyone who can write to Redis can do
    sealed = signing.dumps  # and what a holder of the secret could sign, should one ever write nonsense
    # Registrations: unsigned, and signed but carrying nginx syntax in every address field.
    plain.hset(contract.ENVIRONMENTS_KEY, "env_x", json.dumps(
        {"name": "env_x", "url": "http://127.0.0.1:1/;}evil", "proxy_url": "http://127.0.0.1:2;}", "pid": 1}))
    for name, url, proxy_url in (("env_y", "http://127.0.0.1:3/;}evil", "http://a;}b:1"),
                                 ("env_z", "http://evil\n}.example:4", "http://127.0.0.1:5/x;y"),
                                 ("env_w", "http://[::1]:6", "http://127.0.0.1:7?}evil"),
                                 ("env_v", "http://[::1", "http://[::1")):
        plain.hset(contract.ENVIRONMENTS_KEY, name, sealed(
            {"name": name, "url": url, "proxy_url": proxy_url, "version": "1", "host": "h", "pid": 1,
             "heartbeat_at": time.time(), "stopped_at": None}))
    # Applications whose names are no slugs, signed for themselves, running on a good environment.
    for name in ("evil;}", "crm\n", "Crm", "a" * 41, "admin"):
        plain.hset(contract.APPS_KEY, name, sealed({"name": name, "environments": ["env_a"]}))
        plain.hset(contract.STATUSES_KEY, f"{name}/env_a", sealed(
            {"app": name, "environment": "env_a", "state": "running", "error": "", "traceback": "", "at": 1.0}))
    # An unsigned application entry, and an environment name that is no slug inside a signed one.
    plain.hset(contract.APPS_KEY, "forged", json.dumps({"name": "forged", "environments": ["env_a"]}))
    plain.hset(contract.APPS_KEY, "odd", sealed({"name": "odd", "environments": ["env_a;}", "env_y", "env_z",
                                                                              "env_w", "env_v"]}))
    for env in ("env_y", "env_z", "env_w", "env_x", "env_v"):
        for app in ("odd", "crm"):
            plain.hset(contract.STATUSES_KEY, f"{app}/{env}", sealed(
                {"app": app, "environment": env, "state": "running", "error": "", "traceback": "", "at": 1.0}))

    plan = export.collect(r, SUPERVISOR)
    text = nginx.render(plan)

    assert plan.single == {"crm": "env_a"} and plan.chosen == {} and list(plan.upstreams) == ["env_a"]
    for forged in ("evil", ";}", "a;}b", "x;y", "forged appsup", "Crm", "a" * 41, "admin ", "127.0.0.1:2",
                   "127.0.0.1:5", "127.0.0.1:7"):
        assert forged not in text, forged
    assert "\ncrm\n" not in text
    assert sum(1 for s in plan.skipped if s.kind == "application" and s.name == "") == 5
    assert {s.name: s.reason for s in plan.skipped}["forged"] == "its configuration entry does not verify"
    if NGINX:
        checked = nginx_check(tmp_path, text)
        assert checked.returncode == 0, checked.stderr


def test_the_same_redis_gives_the_same_file_in_sorted_order(cluster_view):
    first = nginx.render(export.collect(cluster_view, SUPERVISOR))
    assert nginx.render(export.collect(cluster_view, SUPERVISOR)) == first
    cookie_routes = [line.split()[0] for line in first.splitlines() if line.startswith('    "') and "/env_" in line]
    assert cookie_routes == sorted(cookie_routes) == ['"half/env_b"', '"shop/env_a"', '"shop/env_b"']


def test_a_value_that_is_not_a_plain_token_is_refused_when_rendering(cluster_view):
    plan = export.collect(cluster_view, SUPERVISOR)
    with pytest.raises(nginx.Unsafe):
        nginx.render(plan, withheld_cookies={"session;id"})
    for listen in ("80; include /etc/passwd", "[::1;]:80", "0", "65536", "a b:80"):
        with pytest.raises(nginx.Unsafe):
            nginx.render(plan, listen=listen)
    for listen in ("80", "127.0.0.1:8080", "[::]:80", "localhost:80"):
        assert f"    listen {listen};\n" in nginx.render(plan, listen=listen)


def test_the_file_bounds_request_heads_as_the_web_processes_do(cluster_view, settings):
    configure(cluster_view, {"crm": ["env_a"]})
    text = nginx.render(export.collect(cluster_view, SUPERVISOR), max_header_bytes=settings.APP_MAX_HEADER_BYTES,
                        head_timeout=settings.APP_HEAD_TIMEOUT)
    assert f"    large_client_header_buffers 1 {settings.APP_MAX_HEADER_BYTES};\n" in text
    assert f"    client_header_timeout {int(settings.APP_HEAD_TIMEOUT * 1000)}ms;\n" in text


@needs_nginx
def test_nginx_accepts_the_exported_configuration(cluster_view, tmp_path, settings):
    settings.APP_PROXY_MAX_BODY = 100 * 1024 * 1024
    register(cluster_view, "env_tls", "https://localhost:8443")
    configure(cluster_view, {"crm": ["env_a"], "shop": ["env_a", "env_b"], "tls": ["env_tls"]})
    status.write(cluster_view, "tls", "env_tls", "running")
    plan = export.collect(cluster_view, SUPERVISOR)
    assert "env_tls" in plan.upstreams
    text = nginx.render(plan, listen="127.0.0.1:18080", server_names=["apps.example", "localhost"],
                        max_body=settings.APP_PROXY_MAX_BODY,
                        withheld_cookies={"sessionid", "csrftoken", "django_language", "messages"})
    assert "client_max_body_size 104857600;" in text
    checked = nginx_check(tmp_path, text)
    assert checked.returncode == 0, checked.stderr


# -- the command ----------------------------------------------------------------------------------------------


def test_the_command_writes_the_file_and_says_what_it_routed_and_skipped(cluster_view, tmp_path, capsys):
    output = tmp_path / "appsup.conf"
    call_command("exportproxy", "--output", str(output), "--supervisor-port", "15999", "--listen", "8080")
    text = output.read_text()
    assert "upstream appsup_supervisor {\n    server 127.0.0.1:15999;" in text and "    listen 8080;" in text
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["exportproxy: 3 applications routed by nginx to 2 environments (2 by the environment remembered "
                   "in the appsup_env cookie); 1 skipped, left to the supervisor: application idle "
                   "(not running: stopped on env_a)"]

    call_command("exportproxy", "--supervisor-upstream", "https://supervisor.internal")
    assert "server supervisor.internal:443;" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--format", "apache"], "unknown format 'apache'"),
    (["--output", "/nonexistent-dir/appsup.conf"], "--output: cannot write /nonexistent-dir/appsup.conf"),
    (["--output", "/tmp"], "it is a directory"),
    (["--supervisor-upstream", "http://127.0.0.1:14000/admin/"], "--supervisor-upstream"),
    (["--supervisor-upstream", "127.0.0.1:14000"], "--supervisor-upstream"),
    (["--supervisor-port", "x"], "--supervisor-port"),
    (["--listen", "80;"], "--listen"),
    (["--server-name", "a b"], "--server-name"),
])
def test_bad_options_exit_with_status_2_and_a_message(cluster_view, capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "exportproxy", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_incomplete_cache_is_not_exported(r):
    register(r, "env_a", "http://127.0.0.1:15000")
    with pytest.raises(CommandError, match="configuration cache in Redis is incomplete") as failed:
        call_command("exportproxy")
    assert failed.value.returncode == 1
