"""The Environments tab of the supervisor's admin, through real HTTP requests against the real test Redis."""

import re
import time
from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from environments.models import Environment
from exchange import contract, redis_client, registry

from .factories import create_application, mirror, register_environment
from .pages import changelist_row as row
from .pages import messages_of

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:environments_environment_changelist"


def changelist(client, **params):
    return client.get(reverse(CHANGELIST), params)


def shown_names(response):
    return [env.name for env in response.context["cl"].result_list]




def change_url(name):
    return reverse("admin:environments_environment_change", args=[Environment.objects.get(name=name).pk])


def delete_url(name):
    return reverse("admin:environments_environment_delete", args=[Environment.objects.get(name=name).pk])


def redis_goes_away(settings):
    """Point both channels at a port where nothing listens, as when the Redis server is down; the controller's
    next pass finds out."""
    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    mirror()


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


def test_changelist_shows_each_registration_with_its_heartbeat_time_and_age(admin_client):
    heartbeat = time.time() - 120
    register_environment("env_a", proxy_url="http://proxy-a.test:9000", heartbeat_at=heartbeat)

    html = row(changelist(admin_client), "env_a")

    assert "1.0.0" in html
    assert "http://env_a.test:8000" in html
    assert "proxy: http://proxy-a.test:9000" in html
    at = datetime.fromtimestamp(heartbeat, tz=dt_timezone.utc)
    assert (f'<time class="appsup-time" datetime="{at.isoformat()}" data-live-time><span class="appsup-at">{at:%Y-%m-%d %H:%M:%S} UTC</span> · '
            '<span class="appsup-ago" data-ago>2 min ago</span></time>') in html
    assert "appsup-badge-online" in html


def test_long_silent_environment_is_shown_offline_and_why(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)

    response = changelist(admin_client)

    assert "appsup-badge-online" in row(response, "env_a")
    offline = row(response, "env_b")
    assert "appsup-badge-offline" in offline and "appsup-badge-online" not in offline
    assert "last heartbeat" in offline  # the badge's title gives the reason


def test_withdrawn_environment_is_offline_after_the_controllers_next_pass(admin_client, r):
    register_environment("env_a")
    assert "appsup-badge-online" in row(changelist(admin_client), "env_a")

    registry.withdraw(r, {"name": "env_a"})  # the worker stopped gracefully
    mirror()

    assert "appsup-badge-offline" in row(changelist(admin_client), "env_a")


def test_page_views_only_read_a_registration_reaches_the_page_through_the_controller(admin_client):
    register_environment("env_new", sync=False)
    assert shown_names(changelist(admin_client)) == []  # a page view writes nothing

    mirror()

    assert shown_names(changelist(admin_client)) == ["env_new"]


def test_status_filter_shows_only_online_or_only_offline_environments(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    register_environment("env_c")

    assert shown_names(changelist(admin_client, status="online")) == ["env_a", "env_c"]
    assert shown_names(changelist(admin_client, status="offline")) == ["env_b"]
    assert shown_names(changelist(admin_client)) == ["env_a", "env_b", "env_c"]


def test_environments_cannot_be_added_from_the_admin(admin_client):
    add = reverse("admin:environments_environment_add")
    assert admin_client.get(add).status_code == 403
    assert f'href="{add}"' not in changelist(admin_client).content.decode()


def test_change_page_shows_the_registration_read_only(admin_client):
    register_environment("env_a")

    response = admin_client.get(change_url("env_a"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "http://env_a.test:8000" in html and "testhost" in html
    assert 'name="url"' not in html and 'name="name"' not in html
    posted = admin_client.post(change_url("env_a"), {"name": "renamed", "url": "http://evil.test"})
    assert posted.status_code == 403
    assert Environment.objects.get().url == "http://env_a.test:8000"


def test_change_page_lists_hosted_applications_with_their_state(admin_client, r):
    from exchange import status

    register_environment("env_a")
    create_application("crm", ["env_a"])
    status.write(r, "crm", "env_a", contract.RUNNING)

    mirror()
    html = admin_client.get(change_url("env_a")).content.decode()

    assert re.search(r">crm</a>\s*<span class=\"appsup-badge appsup-badge-running\"", html)


def test_online_environment_cannot_be_deleted_and_the_page_says_why(admin_client):
    register_environment("env_a")

    page = admin_client.get(delete_url("env_a"), follow=True)
    posted = admin_client.post(delete_url("env_a"), {"post": "yes"}, follow=True)

    for response in (page, posted):
        assert response.redirect_chain[-1][0] == change_url("env_a")
        assert ("error", "Environment env_a cannot be deleted while it is online: its worker would register it "
                "again. Stop its worker (runworker) first; once it shows offline, delete it.") in messages_of(response)
    assert Environment.objects.filter(name="env_a").exists()


def test_offline_environment_that_hosts_applications_cannot_be_deleted(admin_client):
    register_environment("env_a", heartbeat_at=0)
    create_application("crm", ["env_a"])

    response = admin_client.post(delete_url("env_a"), {"post": "yes"}, follow=True)

    assert response.status_code == 200
    [(level, text)] = messages_of(response)
    assert level == "error" and text == (
        "Environment env_a cannot be deleted while it hosts applications (crm). Delete those applications first, or, "
        "if it will never answer again, use Forget environment: it removes its placements, and the applications keep "
        "running on their other environments.")
    assert Environment.objects.filter(name="env_a").exists()


def test_deleting_an_offline_environment_also_forgets_its_registration(admin_client, r):
    register_environment("env_a", heartbeat_at=0)
    assert "delete those" not in admin_client.get(delete_url("env_a")).content.decode()

    response = admin_client.post(delete_url("env_a"), {"post": "yes"}, follow=True)

    assert response.redirect_chain[-1][0] == reverse(CHANGELIST)
    assert not Environment.objects.exists()
    assert r.hget(contract.ENVIRONMENTS_KEY, "env_a") is None
    assert shown_names(changelist(admin_client)) == []  # the refresh did not bring it back


def test_bulk_delete_confirms_only_environments_that_may_go(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    register_environment("env_c", heartbeat_at=0)
    create_application("crm", ["env_c"])
    pks = {e.name: e.pk for e in Environment.objects.all()}
    selected = {"action": "delete_selected", "_selected_action": list(pks.values())}

    confirmation = admin_client.post(reverse(CHANGELIST), selected)

    assert confirmation.status_code == 200
    assert [e.name for e in confirmation.context["queryset"]] == ["env_b"]
    errors = [text for level, text in messages_of(confirmation) if level == "error"]
    assert len(errors) == 2
    assert "env_a cannot be deleted while it is online" in errors[0]
    assert "env_c cannot be deleted while it hosts applications (crm)" in errors[1]

    done = admin_client.post(reverse(CHANGELIST), {**selected, "_selected_action": [pks["env_b"]], "post": "yes"},
                             follow=True)

    assert ("success", "Successfully deleted 1 environment.") in messages_of(done)
    assert sorted(Environment.objects.values_list("name", flat=True)) == ["env_a", "env_c"]


def _queries_for_changelist(client):
    client.get(reverse(CHANGELIST))  # the first load may mirror new registrations
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse(CHANGELIST)).status_code == 200
    return len(queries)


def test_changelist_costs_the_same_queries_for_5_or_50_environments(admin_client):
    for i in range(5):
        register_environment(f"env_{i}", heartbeat_at=0 if i % 2 else None)
    few = _queries_for_changelist(admin_client)
    for i in range(5, 50):
        register_environment(f"env_{i}", heartbeat_at=0 if i % 2 else None)
    many = _queries_for_changelist(admin_client)

    assert few == many


def test_redis_down_shows_a_warning_and_the_last_known_environments(admin_client, settings):
    register_environment("env_a")
    redis_goes_away(settings)

    response = changelist(admin_client)
    page = admin_client.get(change_url("env_a"))

    assert response.status_code == 200 and page.status_code == 200
    assert shown_names(response) == ["env_a"]
    for r in (response, page):
        [(level, text)] = messages_of(r)
        assert level == "warning" and text.startswith("Redis is unavailable")


def test_deleting_while_redis_is_down_keeps_the_environment_and_says_so(admin_client, settings):
    register_environment("env_a", heartbeat_at=0)
    redis_goes_away(settings)

    response = admin_client.post(delete_url("env_a"), {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert any(level == "error" and "Could not delete env_a: Redis is unavailable" in text
               for level, text in messages_of(response))
    assert Environment.objects.filter(name="env_a").exists()


def test_an_environment_whose_registration_does_not_verify_is_shown_rejected_with_why(admin_client, r):
    import json

    register_environment("env_a")
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", json.dumps({"name": "env_a", "url": "http://attacker.example"}))
    mirror()

    html = row(changelist(admin_client), "env_a")

    assert "appsup-badge-rejected" in html and "does not verify: not signed" in html
    assert "attacker.example" not in html


def test_registrations_that_do_not_verify_make_no_row_and_are_counted_in_a_notice(admin_client, r):
    import json

    from environments import mirror as registry_mirror

    register_environment("env_a")
    for i in range(30):
        r.hset(contract.ENVIRONMENTS_KEY, f"ghost_{i}", json.dumps({"name": f"ghost_{i}", "url": "http://x.example"}))
    registry_mirror.sync(r, registry_mirror.Seen())  # as the controller does

    response = changelist(admin_client)

    assert shown_names(response) == ["env_a"]
    [(level, text)] = [m for m in messages_of(response) if "registrations in Redis" in m[1]]
    assert level == "warning" and text.startswith("30 registrations in Redis do not verify")
    assert text.count("<li><code>ghost_") == registry_mirror.RECENT_REJECTED  # the last few only


def test_each_environment_is_marked_for_live_updates(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    Environment.objects.filter(name="env_a").update(web_ok=False, problem="its web does not answer")

    response = changelist(admin_client)

    env_a, env_b = row(response, "env_a"), row(response, "env_b")
    assert 'data-live-environment="env_a" data-status="degraded"' in env_a
    assert "its web does not answer" in env_a
    assert 'data-live-environment="env_b" data-status="offline"' in env_b
    assert 'data-live-fragment="status:env_b"' in env_b and 'data-live-fragment="heartbeat:env_b"' in env_b
    assert '<script src="/static/live/live.js"></script>' in response.content.decode()


def test_change_page_dates_are_local_time_with_zone_and_how_long_ago(admin_client, r):
    register_environment("env_a", heartbeat_at=time.time() - 30)
    registry.withdraw(r, {"name": "env_a", "url": "http://env_a.test:8000"})
    mirror()

    html = admin_client.get(change_url("env_a")).content.decode()

    env = Environment.objects.get()
    for moment in (env.first_seen_at, env.last_heartbeat_at, env.stopped_at):
        assert (f'<time class="appsup-time" datetime="{moment.isoformat()}" data-live-time>'
                f'<span class="appsup-at">{moment:%Y-%m-%d %H:%M:%S} UTC</span> · <span class="appsup-ago" data-ago>') in html
    assert "30 s ago" in html
    assert " a.m." not in html and " p.m." not in html


def test_change_page_marks_hosted_applications_for_live_updates(admin_client, r):
    from exchange import status

    register_environment("env_a")
    create_application("crm", ["env_a"])
    status.write(r, "crm", "env_a", contract.RUNNING)
    mirror()

    html = admin_client.get(change_url("env_a")).content.decode()

    assert '<li class="appsup-placement" data-live-placement="crm:env_a" data-state="running"' in html
    assert 'href="/apps/crm/?_env=env_a"' in html
