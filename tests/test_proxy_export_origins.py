"""The nginx export with an origin per application (APP_APPS_DOMAIN): routed by host, <name>.<domain> and each
custom domain of a running application, the worker told which application the host is; /apps/<name>/ left to
the supervisor, which sends it to the application's own origin; a file nginx accepts."""

from exchange import cache, status
from proxy import export, nginx

from .test_proxy_export import SUPERVISOR, needs_nginx, nginx_check, register


def origins_view(r):
    register(r, "env_a", "http://127.0.0.1:15000")
    cache.replace_all(r, {
        "crm": {"environments": ["env_a"], "desired_state": "running", "domains": ["crm.example.com", "bad domain"]},
        "idle": {"environments": ["env_a"], "desired_state": "stopped", "domains": ["idle.example.com"]},
    })
    status.write(r, "crm", "env_a", "running")
    return r


def test_applications_are_routed_by_their_own_hosts(r):
    plan = export.collect(origins_view(r), SUPERVISOR)
    assert plan.domains == {"crm.example.com": "crm"}  # a stopped application's domains go to the supervisor
    text = nginx.render(plan, apps_domain="apps.test")
    assert 'map $host $appsup_app {' in text
    assert r'"~^(?<appsup_host_name>[a-z][a-z0-9_-]{0,39})\.apps\.test$" $appsup_host_name;' in text
    assert "    crm.example.com crm;" in text
    assert "proxy_set_header X-Appsup-App $appsup_app;" in text
    assert "location /apps/crm/" not in text and "map $request_uri $appsup_app" not in text
    # Without it, as before: by path.
    single = nginx.render(plan)
    assert "location /apps/crm/ {" in single and "X-Appsup-App" not in single


@needs_nginx
def test_nginx_accepts_the_file_routed_by_host(r, tmp_path):
    checked = nginx_check(tmp_path, nginx.render(export.collect(origins_view(r), SUPERVISOR), apps_domain="apps.test"))
    assert checked.returncode == 0, checked.stderr
