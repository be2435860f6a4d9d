"""The access proxy's own pages (proxy.pages, texts from proxy.targets): what happened and what to do in words, a link
back to the supervisor's admin, the machine code kept for automation (JSON ``error``, the page's ``data-code``).

Requests go through the proxy's real ASGI application in this process, reading real Redis; test_proxy.py covers the
same application served by uvicorn."""

import asyncio
import html
import json
import re
import time
from urllib.parse import unquote

import pytest

from apps import cache
from apps.models import Application, Placement
from exchange import contract, directory, status
from exchange.contract import STATUSES_KEY, status_field
from proxy import asgi as proxy_asgi

from .conftest import free_port
from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db

JSON = "application/json"


async def _stand_in_django(scope, receive, send):
    raise AssertionError(f"the proxy handed {scope['path']} to Django")


@pytest.fixture(autouse=True)
def _fresh():
    directory.directory.clear()
    yield
    directory.directory.clear()


def get(path, accept="text/html", cookie=None):
    """(status, headers, body) of GET PATH through the proxy's ASGI application."""
    path_only, _, query = path.partition("?")
    headers = [(b"accept", accept.encode())] + ([(b"cookie", cookie.encode())] if cookie else [])
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": unquote(path_only),
             "raw_path": path_only.encode(), "query_string": query.encode(), "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(proxy_asgi.build(_stand_in_django)(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def page(path, **kwargs):
    status_code, headers, body = get(path, **kwargs)
    assert headers[b"content-type"].startswith(b"text/html")
    return status_code, body.decode()


def as_json(path, **kwargs):
    status_code, headers, body = get(path, accept=JSON, **kwargs)
    assert headers[b"content-type"] == JSON.encode()
    return status_code, json.loads(body)


def text(markup):
    """What a reader sees: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def headline(markup):
    return text(re.search(r"<h1>(.*?)</h1>", markup, re.S).group(1))


def publish(r, name, environments, states=None, display_name=""):
    app = create_application(name, environments, display_name=display_name)
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    for env, state in (states or {}).items():
        status.write(r, name, env, state, error="ValueError: bad setting" if state == contract.ERROR else "")
    directory.directory.clear()
    return app


# --- What happened and what to do ------------------------------------------------------------------------------


def test_a_stopped_application_says_so_in_words_and_how_to_start_it(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})

    code, markup = page("/apps/crm/admin/")

    assert code == 503
    assert headline(markup) == "CRM is stopped"
    seen = text(markup)
    assert "CRM is stopped on environment env_a." in seen
    assert "An operator can start it from the supervisor's admin: Applications → crm → Start." in seen
    # The machine code is kept, but in the footer and an attribute, not as the headline.
    assert 'data-code="not-running"' in markup
    assert re.search(r"<footer>.*HTTP 503 · <code>not-running</code>", markup)
    assert not re.search(r"<h1>.*not-running", markup)


def test_the_page_links_back_to_the_application_in_the_supervisors_admin(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})

    _, markup = page("/apps/crm/")
    assert '<a href="/admin/apps/application/?name=crm">crm in the supervisor&#x27;s admin</a>' in markup
    assert '<a href="/admin/environments/environment/?name=env_a">' in markup

    _, body = as_json("/apps/crm/")
    assert body["admin_url"] == "/admin/apps/application/?name=crm"


def test_the_admin_link_lists_exactly_that_application_with_its_start_action(r, admin_client):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})
    publish(r, "crm2", ["env_a"], {"env_a": contract.STOPPED})
    _, body = as_json("/apps/crm/")

    listing = admin_client.get(body["admin_url"])

    assert listing.status_code == 200  # a filter the admin accepts (an unknown one redirects with ?e=1)
    assert [a.name for a in listing.context["cl"].result_list] == ["crm"]
    assert 'value="start"' in listing.content.decode()


def test_the_json_variant_keeps_its_shape_and_adds_the_advice(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], {"env_a": contract.STARTING})

    code, body = as_json("/apps/crm/")

    assert code == 503
    assert set(body) == {"error", "status", "title", "message", "advice", "admin_url", "application", "environment",
                         "environments"}
    assert (body["error"], body["status"], body["application"], body["environment"]) == (
        "not-running", 503, "crm", "env_a")
    assert body["title"] == "CRM is starting"
    assert body["message"] == "CRM is starting on environment env_a."
    assert body["advice"] == "Try again in a few seconds: this page can simply be reloaded."
    assert body["environments"] == []


def test_a_failed_application_shows_its_error_and_where_to_read_the_traceback(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], {"env_a": contract.ERROR})

    _, body = as_json("/apps/crm/")

    assert body["title"] == "CRM failed on env_a"
    assert body["message"] == "CRM failed on environment env_a: ValueError: bad setting"
    assert "traceback in the supervisor's admin (Applications → crm)" in body["advice"]


def test_a_stopped_environment_chosen_before_points_to_one_where_it_runs(r):
    register_environment("env_a")
    register_environment("env_b")
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.STOPPED, "env_b": contract.RUNNING})

    code, markup = page("/apps/shop/", cookie="appsup_env=env_a")

    assert code == 503 and headline(markup) == "SHOP is stopped"
    assert text(markup).count("Or use another of its environments below.") == 1
    assert '<a href="/apps/shop/?_env=env_b">Use env_b</a>' in markup
    assert "Use env_a" not in markup


def test_an_unknown_application_points_to_the_list_of_applications(r):
    code, markup = page("/apps/nothere/")
    assert code == 404
    assert headline(markup) == "No such application"
    assert "There is no application named 'nothere' on this supervisor." in text(markup)
    assert "Check the address." in text(markup)
    assert '<a href="/admin/apps/application/">Applications in the supervisor&#x27;s admin</a>' in markup

    _, body = as_json("/apps/nothere/")
    assert (body["error"], body["admin_url"]) == ("unknown-application", "/admin/apps/application/")


# --- Never started, offline: the states the admin shows ---------------------------------------------------------


def test_a_never_started_application_is_stopped_on_its_page_as_in_the_admin(r):
    register_environment("env_a")
    app = publish(r, "crm", ["env_a"])  # created, never started: no status reported

    code, body = as_json("/apps/crm/")
    _, markup = page("/apps/crm/")

    assert Placement.objects.get(application=app).display_state() == contract.STOPPED
    assert (code, body["title"]) == (503, "CRM is stopped")
    assert "unknown" not in text(markup.split("</head>")[1])
    assert "Applications → crm → Start" in text(markup)


def test_the_choice_page_shows_states_in_words_with_the_admins_badges(r):
    register_environment("env_a")
    register_environment("env_b")
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.RUNNING})  # never started on env_b

    code, markup = page("/apps/shop/?x=1")
    _, body = as_json("/apps/shop/")

    assert code == 300 and headline(markup) == "Choose an environment"
    rows = re.findall(r"<tr>\s*<td>(env_\w)</td>\s*<td><span class=\"appsup-badge appsup-badge-(\w+)\">\2</span>"
                      r"</td>\s*<td><span class=\"appsup-badge appsup-badge-(\w+)\">\3</span>", markup)
    assert rows == [("env_a", "online", "running"), ("env_b", "online", "stopped")]
    assert '<a href="/apps/shop/?x=1&amp;_env=env_a">Use env_a</a>' in markup
    assert [(e["name"], e["state"]) for e in body["environments"]] == [("env_a", "running"), ("env_b", "stopped")]


def test_an_offline_environment_shows_the_state_as_unknown_not_its_stale_value(r):
    register_environment("env_a", heartbeat_at=time.time() - 10_000)
    publish(r, "crm", ["env_a"], {"env_a": contract.STOPPED})

    _, body = as_json("/apps/crm/")

    assert body["title"] == "CRM is unavailable: env_a is offline"
    assert "is offline (no heartbeat from its worker for" in body["message"]
    assert "the state of CRM there is unknown" in body["message"]
    assert "stopped" not in body["message"]
    assert "back online" in body["advice"] and "manage.py runworker" in body["advice"]


def test_an_offline_environment_is_unknown_in_the_list_of_environments(r):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=time.time() - 10_000)
    publish(r, "shop", ["env_a", "env_b"], {"env_a": contract.STOPPED, "env_b": contract.STOPPED})

    code, markup = page("/apps/shop/")
    _, body = as_json("/apps/shop/")

    assert code == 503 and headline(markup) == "SHOP is not running"
    assert [(e["name"], e["status"], e["state"]) for e in body["environments"]] == [
        ("env_a", "online", "stopped"), ("env_b", "offline", "unknown")]
    assert 'appsup-badge-unknown">unknown</span>' in markup


def test_an_environment_that_never_registered_says_to_start_its_worker(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"])
    r.delete("appsup:environments")
    directory.directory.clear()

    _, body = as_json("/apps/crm/")

    assert body["title"] == "CRM is unavailable: env_a has never registered"
    assert "start the worker of environment env_a" in body["advice"]


# --- Faults -----------------------------------------------------------------------------------------------------


def test_without_redis_the_page_says_to_try_again_and_links_to_the_admin(settings):
    from exchange import redis_client

    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.reset()

    code, markup = page("/apps/crm/")
    _, body = as_json("/apps/crm/")

    assert code == 503 and headline(markup) == "Supervisor unavailable"
    assert "Try again in a few seconds" in text(markup) and "Redis" in text(markup)
    assert body["error"] == "unavailable" and "readyz" in body["advice"]
    assert body["admin_url"] == "/admin/apps/application/?name=crm"


def test_a_forged_status_shows_as_stopped_never_running(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"])
    r.hset(STATUSES_KEY, status_field("crm", "env_a"), json.dumps({"state": "running", "at": time.time()}))
    directory.directory.clear()

    code, body = as_json("/apps/crm/")

    assert (code, body["title"]) == (503, "CRM is stopped")


def test_markup_in_a_display_name_or_an_error_is_shown_as_text(r):
    register_environment("env_a")
    publish(r, "crm", ["env_a"], display_name="<b>CRM</b>")
    status.write(r, "crm", "env_a", contract.ERROR, error="<script>alert(1)</script>")
    directory.directory.clear()

    _, markup = page("/apps/crm/")

    assert "<script>" not in markup and "<b>CRM</b>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup


def test_a_path_with_dot_segments_is_a_400_saying_what_is_wrong():
    code, markup = page("/apps/crm/../admin/")
    _, body = as_json("/apps/crm/../admin/")

    assert code == 400
    assert "the path contains '.' or '..' segments" in text(markup)
    assert body["error"] == "bad-request" and "no '.' or '..' segments" in body["advice"]
    assert body["admin_url"] == "/admin/apps/application/"
