"""The Applications tab of the supervisor's admin: real HTTP requests, the real test Redis, real worker agents."""

import re

import pytest
from django.contrib.auth.hashers import check_password
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps import lifecycle
from apps.models import Application, Placement
from environments.models import Environment
from exchange import cache as config_cache
from exchange import contract, redis_client, status
from exchange.channel import queue_for
from workers import provisioning

from .factories import PASSWORD, ThreadAgent, create_application, hold_lock, mirror, register_environment
from .pages import changelist_row as row
from .pages import messages_of

CHANGELIST = "admin:apps_application_changelist"


def changelist_url():
    return reverse(CHANGELIST)


def app_url(view, name):
    return reverse(f"admin:apps_application_{view}", args=[Application.objects.get(name=name).pk])




def states():
    return dict(Placement.objects.values_list("environment__name", "state"))


def select(action, *names, **extra):
    pks = [Application.objects.get(name=n).pk for n in names]
    return {"action": action, "_selected_action": pks, **extra}


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


# -- the list ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_changelist_shows_each_environment_state_in_start_order(admin_client, r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_b", "env_a"], display_name="Customer relations")
    status.write(r, "crm", "env_b", contract.RUNNING)
    status.write(r, "crm", "env_a", contract.ERROR, error="RuntimeError: disk full")

    mirror()
    html = row(admin_client.get(changelist_url()), "crm")

    assert "Customer relations" in html
    badges = re.findall(r">(env_[ab])</a> <span class=\"appsup-badge appsup-badge-(\w+)\"", html)
    assert badges == [("env_b", "running"), ("env_a", "error")]
    assert 'title="RuntimeError: disk full"' in html
    assert states() == {"env_a": contract.ERROR, "env_b": contract.RUNNING}  # mirrored from what workers reported


@pytest.mark.django_db
@pytest.mark.parametrize("state", contract.RUNTIME_STATES)
def test_each_state_has_its_own_badge(admin_client, r, state):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    status.write(r, "crm", "env_a", state)

    mirror()
    assert f'class="appsup-badge appsup-badge-{state}"' in row(admin_client.get(changelist_url()), "crm")


def test_stylesheet_gives_every_badge_a_colour():
    from django.contrib.staticfiles import finders

    with open(finders.find("apps/admin.css")) as f:
        css = f.read()
    for state in (*contract.RUNTIME_STATES, contract.UNKNOWN, contract.ONLINE, contract.OFFLINE):
        assert re.search(rf"\.appsup-badge-{state}\b[^{{]*\{{[^}}]*background", css), state


@pytest.mark.django_db
def test_offline_environment_shows_unknown_state(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_a", "env_b"])
    Placement.objects.update(state=contract.RUNNING)  # the last thing env_b said, long ago

    html = row(admin_client.get(changelist_url()), "crm")

    assert re.search(r">env_a</a> <span class=\"appsup-badge appsup-badge-running\"", html)
    assert re.search(r">env_b</a> <span class=\"appsup-badge appsup-badge-unknown\" title=\"environment env_b is "
                     r"offline: last heartbeat", html)


@pytest.mark.django_db
def test_filtering_by_environment_lists_only_its_applications(admin_client):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_b", "env_a"])
    create_application("wiki", ["env_b"])
    env_b = Placement.objects.filter(environment__name="env_b").first().environment

    response = admin_client.get(changelist_url(), {"environments__id__exact": env_b.pk})

    assert [a.name for a in response.context["cl"].result_list] == ["erp", "wiki"]


@pytest.mark.django_db
def test_with_many_environments_the_filter_asks_for_a_name_instead_of_listing_them(admin_client):
    from apps.admin import EnvironmentFilter

    for i in range(EnvironmentFilter.CHOICES_MAX + 1):
        register_environment(f"env{i:02d}", sync=False)
    mirror()
    create_application("crm", ["env01"])
    create_application("erp", ["env02", "env01"])
    create_application("wiki", ["env02"])

    response = admin_client.get(changelist_url(), {"environment": "env02", "q": "", "desired_state__exact": "stopped"})

    html = response.content.decode()
    assert [a.name for a in response.context["cl"].result_list] == ["erp", "wiki"]
    assert 'name="environment" value="env02"' in html  # the box, keeping the other filters
    assert '<input type="hidden" name="desired_state__exact" value="stopped">' in html
    assert "?environments__id__exact=" not in html  # no list of links


@pytest.mark.django_db
def test_the_open_page_lists_a_hundred_applications_a_page(admin_client, r):
    register_environment("env_a")
    Application.objects.bulk_create(Application(name=f"app{i:03d}", admin_username="boss", admin_password_hash="!")
                                    for i in range(150))
    environment = Environment.objects.get()
    Placement.objects.bulk_create(Placement(application=app, environment=environment)
                                  for app in Application.objects.all())
    open_page = reverse("admin:apps_application_open")

    first, second = admin_client.get(open_page).content.decode(), admin_client.get(open_page, {"p": 2}).content.decode()

    assert first.count("data-live-placement=") == 100 and second.count("data-live-placement=") == 50
    assert "app099:env_a" in first and "app100:env_a" in second
    assert 'href="?p=2" rel="next"' in first and 'href="?p=1" rel="prev"' in second
    assert "page 1 of 2 (150 applications)" in first


def _queries_for_changelist(client):
    client.get(changelist_url())  # the first load may rebuild the configuration cache
    with CaptureQueriesContext(connection) as queries:
        assert client.get(changelist_url()).status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_changelist_costs_the_same_queries_for_5_or_50_applications(admin_client, r):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)

    def add(names):
        for name in names:
            create_application(name, ["env_a", "env_b"])
            status.write(r, name, "env_a", contract.RUNNING)

    add(f"app{i}" for i in range(5))
    few = _queries_for_changelist(admin_client)
    add(f"app{i}" for i in range(5, 50))
    many = _queries_for_changelist(admin_client)

    assert few == many


@pytest.mark.django_db
def test_redis_down_shows_a_warning_and_the_database_state(admin_client, settings):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    Placement.objects.update(state=contract.RUNNING)
    redis_goes_away(settings)

    listing = admin_client.get(changelist_url())
    page = admin_client.get(app_url("change", "crm"))

    assert listing.status_code == 200 and page.status_code == 200
    assert "appsup-badge-running" in row(listing, "crm")
    for response in (listing, page):
        [(level, text)] = messages_of(response)
        assert level == "warning" and text.startswith("Redis is unavailable") and "last known state" in text


# -- add and change ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_form_creates_the_application_on_environments_in_the_chosen_order(
    admin_client, r, django_capture_on_commit_callbacks
):
    register_environment("env_a")
    register_environment("env_b")
    form = admin_client.get(reverse("admin:apps_application_add"))
    assert 'name="environments_0"' in form.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:apps_application_add"),
            {"name": "crm", "display_name": "CRM", "environments_0": "env_b", "environments_1": "env_a",
             "environments_2": "", "environments_3": "", "admin_username": "boss", "admin_password": PASSWORD},
        )

    app = Application.objects.get(name="crm")
    assert response.status_code == 302 and response.url == changelist_url()
    assert app.environment_names() == ["env_b", "env_a"]
    assert app.admin_username == "boss" and check_password(PASSWORD, app.admin_password_hash)
    assert app.desired_state == contract.STOPPED
    assert config_cache.lookup(r, "crm")["environments"] == ["env_b", "env_a"]  # workers will know it


@pytest.mark.django_db
def test_add_form_refuses_a_reserved_name_and_a_repeated_environment(admin_client):
    register_environment("env_a")

    response = admin_client.post(
        reverse("admin:apps_application_add"),
        {"name": "admin", "environments_0": "env_a", "environments_1": "env_a", "admin_username": "boss",
         "admin_password": PASSWORD},
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "reserved" in errors["name"][0] and "listed twice" in errors["environments"][0]
    assert not Application.objects.exists()


@pytest.mark.django_db
def test_change_form_edits_the_display_name_but_not_the_name_nor_the_admin(admin_client, r,
                                                                         django_capture_on_commit_callbacks):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_b", "env_a"], admin_username="boss")
    url = app_url("change", "crm")

    html = admin_client.get(url).content.decode()
    assert 'name="display_name"' in html
    for field in ("name", "admin_username", "desired_state"):
        assert f'name="{field}"' not in html
    # The environments are offered in their start order.
    assert re.search(r'name="environments_0"[^>]*>.*?<option value="env_b" selected>', html, re.DOTALL)
    assert re.search(r'name="environments_1"[^>]*>.*?<option value="env_a" selected>', html, re.DOTALL)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url, {"display_name": "Customers", "name": "hijacked", "admin_username": "eve",
                  "environments_0": "env_b", "environments_1": "env_a"}
        )

    assert response.status_code == 302
    app = Application.objects.get()
    assert (app.name, app.display_name, app.admin_username) == ("crm", "Customers", "boss")
    assert app.environment_names() == ["env_b", "env_a"]
    assert config_cache.lookup(r, "crm")["display_name"] == "Customers"


@pytest.mark.django_db
def test_change_page_shows_each_placement_with_its_error_and_traceback(admin_client, r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_b", "env_a"])
    status.write(r, "crm", "env_b", contract.RUNNING)
    status.write(r, "crm", "env_a", contract.ERROR, error="RuntimeError: disk full",
                 traceback="Traceback (most recent call last):\n  File \"x.py\"\nRuntimeError: disk full")

    mirror()
    html = admin_client.get(app_url("change", "crm")).content.decode()

    table = html[html.index('class="appsup-placements-table"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[ >].*?</tr>", table, re.DOTALL)[1:]
    assert 'data-live-placement="crm:env_b" data-state="running"' in rows[0]
    assert 'data-live-placement="crm:env_a" data-state="error"' in rows[1]
    assert ">env_b</a>" in rows[0] and "appsup-badge-running" in rows[0] and "<details" not in rows[0]
    assert ">env_a</a>" in rows[1] and "appsup-badge-error" in rows[1] and "RuntimeError: disk full" in rows[1]
    assert re.search(r"<details class=\"appsup-traceback\">\s*<summary>Traceback</summary>\s*<pre>Traceback \(most",
                     rows[1])


# -- confirmation before anything is sent -----------------------------------------------------------------------


@pytest.mark.django_db
def test_start_action_asks_for_confirmation_before_sending(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_a"])
    create_application("erp", ["env_b", "env_a"])

    response = admin_client.post(changelist_url(), select("start", "crm", "erp"))

    assert response.status_code == 200
    assert response.templates[0].name == "admin/apps/application/lifecycle_confirmation.html"
    html = response.content.decode()
    assert "Are you sure you want to start these 2 applications" in html
    assert '<input type="hidden" name="post" value="yes">' in html
    assert '<input type="hidden" name="action" value="start">' in html
    assert html.count('name="_selected_action"') == 2
    assert "environment env_b is offline" in html  # warned before confirming
    assert queue_for("env_a").count == 0 and queue_for("env_b").count == 0
    assert set(Application.objects.values_list("desired_state", flat=True)) == {contract.STOPPED}


@pytest.mark.django_db
def test_change_page_buttons_lead_to_the_same_confirmation(admin_client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    html = admin_client.get(app_url("change", "crm")).content.decode()
    for command in ("start", "stop", "restart"):
        assert f'href="{app_url(command, "crm")}"' in html
        response = admin_client.get(app_url(command, "crm"))
        assert response.status_code == 200
        page = response.content.decode()
        assert f"Are you sure you want to {command} the application <strong>crm</strong>" in page
        assert 'name="action"' not in page  # it posts back to the button's own URL
    assert queue_for("env_a").count == 0


# -- running commands (real agents; lifecycle refuses to wait inside a transaction) ------------------------------


@pytest.mark.django_db(transaction=True)
def test_confirming_the_start_action_starts_every_selected_application(admin_client):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        create_application("erp", ["env_a"])
        create_application("wiki", ["env_a"])

        response = admin_client.post(changelist_url(), select("start", "crm", "erp", post="yes"), follow=True)

    assert response.redirect_chain[-1][0] == changelist_url()
    [(crm_level, crm), (erp_level, erp)] = messages_of(response)
    assert crm_level == erp_level == "success"
    assert re.fullmatch(r"Started crm on env_a \(\d+\.\d s\)\.", crm)
    assert re.fullmatch(r"Started erp on env_a \(\d+\.\d s\)\.", erp)
    assert '<li class="success">Started crm on env_a (' in response.content.decode()  # not "Crm"
    placements = dict(Placement.objects.values_list("application__name", "state"))
    assert placements == {"crm": contract.RUNNING, "erp": contract.RUNNING, "wiki": contract.STOPPED}
    assert Application.objects.get(name="crm").desired_state == contract.RUNNING
    assert provisioning.database_exists("crm") and provisioning.database_exists("erp")


@pytest.mark.django_db(transaction=True)
def test_stop_and_restart_buttons_run_after_confirmation(admin_client):
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        assert lifecycle.run(app, contract.START, timeout=60).ok

        stopped = admin_client.post(app_url("stop", "crm"), {"post": "yes"}, follow=True)
        state_after_stop = Placement.objects.get().state
        restarted = admin_client.post(app_url("restart", "crm"), {"post": "yes"}, follow=True)

    assert stopped.redirect_chain[-1][0] == app_url("change", "crm")
    assert state_after_stop == contract.STOPPED
    [(level, text)] = messages_of(stopped)
    assert level == "success" and text.startswith("Stopped crm on env_a (")
    [(level, text)] = messages_of(restarted)
    assert level == "success" and text.startswith("Restarted crm on env_a (")
    assert Placement.objects.get().state == contract.RUNNING


@pytest.mark.django_db(transaction=True)
def test_start_on_an_offline_environment_reports_it_and_leaves_the_start_pending(admin_client):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_b", "env_a"])

    response = admin_client.post(changelist_url(), select("start", "crm", post="yes"), follow=True)

    [(level, text)] = messages_of(response)  # one message for the application, whatever its environments
    assert level == "warning"
    assert re.fullmatch(
        r"Environment env_b is offline: last heartbeat \d+ s ago \(timeout \d+ s\)\. crm stays desired running: "
        r"the controller completes the start on env_b, env_a once env_b is back online\.", text), text
    assert queue_for("env_a").count == 0
    assert Application.objects.get(name="crm").desired_state == contract.RUNNING


@pytest.mark.django_db(transaction=True)
def test_operation_already_in_progress_is_a_warning(monkeypatch, admin_client, r):
    monkeypatch.setattr(lifecycle, "LOCK_WAIT", 0.3)
    register_environment("env_a")
    create_application("crm", ["env_a"])
    hold_lock("crm")

    response = admin_client.post(app_url("start", "crm"), {"post": "yes"}, follow=True)

    [(level, text)] = messages_of(response)
    assert level == "warning" and "another start/stop/restart of crm is in progress" in text
    assert queue_for("env_a").count == 0


@pytest.mark.django_db(transaction=True)
def test_actions_fail_with_a_clear_message_when_redis_is_down(admin_client, settings):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    redis_goes_away(settings)

    response = admin_client.post(changelist_url(), select("start", "crm", "erp", post="yes"), follow=True)

    assert response.status_code == 200
    [(level, failed), not_attempted, page_warning] = messages_of(response)
    assert level == "error" and failed.startswith("Could not start crm: Redis is unavailable (Error 111")
    assert not_attempted == ("warning", "Not attempted: erp.")
    assert page_warning[0] == "warning" and page_warning[1].startswith("Redis is unavailable")  # said once


# -- delete goes through lifecycle.remove ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_deleting_stops_the_application_on_its_environments_first(admin_client, r):
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        assert lifecycle.run(app, contract.START, timeout=60).ok
        confirmation = admin_client.get(app_url("delete", "crm"))
        response = admin_client.post(app_url("delete", "crm"), {"post": "yes"}, follow=True)

    assert confirmation.status_code == 200 and 'name="drop_database"' in confirmation.content.decode()
    assert response.redirect_chain[-1][0] == changelist_url()
    assert ("success", "The application “crm” was deleted successfully.") in messages_of(response)
    assert not Application.objects.exists()
    assert config_cache.lookup(r, "crm") is None and status.read(r, "crm", "env_a") is None
    assert provisioning.database_exists("crm")  # its data is kept unless asked otherwise


@pytest.mark.django_db(transaction=True)
def test_deleting_with_drop_database_ticked_drops_it(admin_client):
    with ThreadAgent("env_a"):
        for name in ("crm", "erp"):
            assert lifecycle.run(create_application(name, ["env_a"]), contract.START, timeout=60).ok
        admin_client.post(app_url("delete", "crm"), {"post": "yes", "drop_database": "yes"})
        admin_client.post(changelist_url(), select("delete_selected", "erp", post="yes", drop_database="yes"))

    assert not Application.objects.exists()
    assert not provisioning.database_exists("crm") and not provisioning.database_exists("erp")


@pytest.mark.django_db(transaction=True)
def test_bulk_delete_keeps_an_application_whose_environment_is_offline(admin_client):
    register_environment("env_b", heartbeat_at=0)
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        create_application("erp", ["env_a", "env_b"])
        confirmation = admin_client.post(changelist_url(), select("delete_selected", "crm", "erp"))
        response = admin_client.post(changelist_url(), select("delete_selected", "crm", "erp", post="yes"),
                                     follow=True)

    assert confirmation.status_code == 200 and 'name="drop_database"' in confirmation.content.decode()
    assert list(Application.objects.values_list("name", flat=True)) == ["erp"]
    found = messages_of(response)
    # Nothing is sent anywhere while one of its environments is offline: erp keeps running on env_a.
    assert [level for level, _ in found] == ["error", "success"]
    assert re.fullmatch(
        r"erp was not deleted: it is deleted once every environment has removed it, and env_b has not \(environment "
        r"env_b is offline: last heartbeat \d+ s ago \(timeout \d+ s\)\)\. Bring env_b back online and try again\.",
        found[0][1]), found[0][1]
    assert found[1] == ("success", "Deleted crm.")


# -- convergence ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_drift_what_it_waits_for_the_next_retry_and_the_last_error(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_a", "env_b"])
    create_application("erp", ["env_a"])
    create_application("hr", ["env_a"])
    Application.objects.filter(name__in=["crm", "erp"]).update(desired_state=contract.RUNNING)
    Placement.objects.filter(application__name="hr").update(state=contract.STOPPED)
    Placement.objects.filter(application__name="crm", environment__name="env_a").update(state=contract.RUNNING)
    Application.objects.filter(name="crm").update(waiting_for="env_b (offline)")
    Application.objects.filter(name="erp").update(
        attempts=2, next_attempt_at=timezone.now() + timedelta(seconds=10),
        last_error="start failed on env_a: OperationalError: disk full", last_error_at=timezone.now())

    response = admin_client.get(changelist_url())

    crm, erp, hr = (row(response, name) for name in ("crm", "erp", "hr"))
    assert "wants running</strong><br>env_b: unknown<br>waiting for env_b (offline)" in crm
    assert "wants running</strong><br>env_a: stopped" in erp
    assert "next retry" in erp and "(2 failed)" in erp and "disk full" in erp
    assert "stopped · in sync" in hr
    attention = admin_client.get(changelist_url(), {"attention": "yes"}).context["cl"].result_list
    assert [a.name for a in attention] == ["crm", "erp"]
    calm = admin_client.get(changelist_url(), {"attention": "no"}).context["cl"].result_list
    assert [a.name for a in calm] == ["hr"]


# -- live updates, links, dates -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_placement_is_marked_for_live_updates_with_an_open_link_shown_while_it_runs(admin_client, r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    status.write(r, "crm", "env_a", contract.RUNNING)
    mirror()

    html = row(admin_client.get(changelist_url()), "crm")

    at = Placement.objects.get(environment__name="env_a").state_at
    assert f'data-live-placement="crm:env_a" data-state="running" data-at="{at.isoformat()}"' in html
    assert ('<a class="appsup-open" href="/apps/crm/?_env=env_a" target="_blank" rel="noopener" '
            'data-open="crm:env_a" title="open crm on env_a">Open</a>') in html
    assert ('<a class="appsup-open" href="/apps/crm/?_env=env_b" target="_blank" rel="noopener" '
            'data-open="crm:env_b" title="open crm on env_b" hidden>Open</a>') in html  # stopped there
    assert 'data-live-placement="crm:env_b" data-state="stopped" data-at=""' in html
    assert 'data-live-fragment="states:crm"' in html and 'data-live-fragment="attention:crm"' in html


def test_running_on_a_degraded_environment_is_shown_degraded_with_nothing_to_open(admin_client, r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    status.write(r, "crm", "env_a", contract.RUNNING)
    status.write(r, "crm", "env_b", contract.RUNNING)
    mirror()
    Environment.objects.filter(name="env_a").update(web_ok=False, problem="its web does not answer")

    for html in (row(admin_client.get(changelist_url()), "crm"),
                 admin_client.get(app_url("change", "crm")).content.decode()):
        # The proxy refuses crm on env_a (503 degraded): no green "running" there, no "Open".
        assert 'data-environment-status="degraded"' in html
        assert 'class="appsup-badge appsup-badge-degraded" title="environment env_a is degraded: its web does ' \
               'not answer" data-live-badge>degraded<' in html
        assert 'data-open="crm:env_a" title="open crm on env_a" hidden>' in html
        assert 'data-open="crm:env_b" title="open crm on env_b">' in html
        assert 'appsup-badge-running" title="" data-live-badge>running<' in html  # env_b


@pytest.mark.django_db
def test_list_and_change_pages_load_the_live_script(admin_client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    for url in (changelist_url(), app_url("change", "crm")):
        html = admin_client.get(url).content.decode()
        assert '<script src="/static/live/live.js"></script>' in html
        assert 'href="/static/live/live.css"' in html


def test_the_live_script_and_stylesheet_are_served():
    from django.contrib.staticfiles import finders

    script = open(finders.find("live/live.js")).read()
    assert "/ws/events/" in script and "live-status" in script
    assert "innerHTML" not in script  # event data is written as text, never as markup
    assert finders.find("live/live.css")


@pytest.mark.django_db
def test_the_list_shows_the_last_error_with_its_time(admin_client, r):
    from datetime import timedelta

    from django.utils import timezone

    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    create_application("erp", ["env_a"])
    create_application("hr", ["env_a"])
    status.write(r, "crm", "env_b", contract.ERROR, error="RuntimeError: disk full")
    mirror()
    earlier = timezone.now() - timedelta(minutes=5)
    Application.objects.filter(name="crm").update(last_error="start failed on env_a: old", last_error_at=earlier)
    Application.objects.filter(name="erp").update(last_error="start failed on env_a: gone", last_error_at=earlier)

    response = admin_client.get(changelist_url())

    crm, erp, hr = (row(response, name) for name in ("crm", "erp", "hr"))
    at = Placement.objects.get(application__name="crm", environment__name="env_b").state_at
    assert re.search(r'<div class="appsup-last-error">last error: <span class="appsup-error" title="env_b: '
                     r'RuntimeError: disk full">env_b: RuntimeError: disk full</span><br><time class="appsup-time" '
                     r'datetime="' + re.escape(at.isoformat()) + r'" data-live-time>', crm)  # the newer of the two
    # An old failure of an application now in sync is shown, quietly.
    assert "stopped · in sync" in erp
    assert ('<span class="appsup-muted" title="start failed on env_a: gone">start failed on env_a: gone</span>'
            in erp and "5 min ago" in erp)
    assert "last error" not in hr


@pytest.mark.django_db
def test_a_degraded_environment_needs_attention(admin_client):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_b"])
    Environment.objects.filter(name="env_a").update(web_ok=False, problem="its web does not answer")

    response = admin_client.get(changelist_url())

    assert "env_a: degraded" in row(response, "crm") and "stopped · in sync" in row(response, "erp")
    attention = admin_client.get(changelist_url(), {"attention": "yes"}).context["cl"].result_list
    assert [a.name for a in attention] == ["crm"]
    assert [a.name for a in Application.objects.filter(Application.objects.needing_attention())] == ["crm"]


@pytest.mark.django_db
def test_the_environment_filter_has_no_dash_choice(admin_client):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a"])

    response = admin_client.get(changelist_url())

    [environments] = [f for f in response.context["cl"].filter_specs if f.title == "environments"]
    choices = [c["display"] for c in environments.choices(response.context["cl"])]
    assert choices == ["All", "env_a", "env_b"]


@pytest.mark.django_db
def test_change_page_dates_are_local_time_with_zone_and_how_long_ago(admin_client, r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    entry = status.write(r, "crm", "env_a", contract.RUNNING)
    mirror()

    html = admin_client.get(app_url("change", "crm")).content.decode()

    at = Placement.objects.get().state_at
    assert abs(at.timestamp() - entry["at"]) < 0.001
    assert (f'<time class="appsup-time" datetime="{at.isoformat()}" data-live-time><span class="appsup-at">{at:%Y-%m-%d %H:%M:%S} UTC</span> · '
            '<span class="appsup-ago" data-ago>') in html
    created = Application.objects.get().created_at
    assert f'datetime="{created.isoformat()}"' in html
    assert " a.m." not in html and " p.m." not in html


@pytest.mark.django_db
def test_view_site_leads_to_a_page_of_open_links_for_each_application(admin_client, r):
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_b", "env_a"], display_name="Customer relations")
    create_application("erp", ["env_a"])
    status.write(r, "crm", "env_b", contract.RUNNING)
    mirror()
    open_page = reverse("admin:apps_application_open")

    index = admin_client.get(reverse("admin:index")).content.decode()
    response = admin_client.get(open_page)

    assert f'<a href="{open_page}">View site</a>' in index
    html = response.content.decode()
    assert response.status_code == 200 and "Customer relations" in html
    assert re.search(r'data-open="crm:env_b" title="open crm on env_b">Open</a>', html)
    assert re.search(r'data-open="crm:env_a" title="open crm on env_a" hidden>Open</a>', html)
    assert 'data-live-placement="erp:env_a" data-state="stopped"' in html
    assert html.index("crm:env_b") < html.index("crm:env_a")  # in start order


@pytest.mark.django_db
def test_the_open_page_is_for_staff_only(client):
    response = client.get(reverse("admin:apps_application_open"))
    assert response.status_code == 302 and "/admin/login/" in response.url


@pytest.mark.django_db(transaction=True)
def test_a_bulk_start_reports_one_message_per_application_whatever_its_environments(admin_client):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm", ["env_b", "env_a"])
        create_application("erp", ["env_a", "env_b"])

        response = admin_client.post(changelist_url(), select("start", "crm", "erp", post="yes"), follow=True)

    [(crm_level, crm), (erp_level, erp)] = messages_of(response)
    assert crm_level == erp_level == "success"
    assert re.fullmatch(r"Started crm on env_b \(\d+\.\d s\), env_a \(\d+\.\d s\)\.", crm), crm
    assert re.fullmatch(r"Started erp on env_a \(\d+\.\d s\), env_b \(\d+\.\d s\)\.", erp), erp
