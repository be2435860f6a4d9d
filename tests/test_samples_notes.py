"""The sample business application (samples.notes) hosted by a worker, in-process with Django's test client: its
pages at /apps/<name>/ beside the hosted admin, its form and JSON API, its static files, each application's notes in
its own database, and an operator's view that fails failing alone."""

import json
import re

import pytest
from django.apps import apps as registry
from django.test import Client

from apps.models import Application
from exchange import contract, redis_client, status
from exchange.directory import directory
from workers import commands, provisioning
from workers.routing import using

from .factories import PASSWORD, create_application, register_environment
from .hosted_code import NOTES_URLCONF, hosting

pytestmark = pytest.mark.django_db(transaction=True)

ENV = "env_a"
ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def hosted_urlconf():
    """APP_HOSTED_URLCONF of the worker (tests parametrize it)."""
    return NOTES_URLCONF


@pytest.fixture(autouse=True)
def worker(settings, hosted_urlconf):
    """This process is worker env_a hosting the sample, configured as settings.py configures such a worker."""
    settings.APP_MODE = "worker"
    settings.ENVIRONMENT_NAME = ENV
    settings.ROOT_URLCONF = "workers.urls"
    directory.clear()
    with hosting(urlconf=hosted_urlconf):
        yield
    directory.clear()
    directory.stop_listening()  # its subscription would be counted by tests of the events channel


def start(name):
    """Start NAME on env_a as the worker agent would: its database migrated (notes included), its superuser."""
    from apps import cache

    register_environment(ENV)
    app = create_application(name, [ENV])
    cache.publish(redis_client.supervisor_redis(), Application.objects.with_placements().get(pk=app.pk))
    outcome = commands.start(name, ENV, {"admin_username": app.admin_username,
                                         "admin_password_hash": app.admin_password_hash})
    assert outcome["state"] == contract.RUNNING, outcome
    directory.clear()


def csrf_token(response):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode()).group(1)


def logged_in(app, **client_options):
    client = Client(enforce_csrf_checks=True, **client_options)
    login = f"/apps/{app}/admin/login/"
    page = client.get(login)
    response = client.post(login, {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(page)},
                           headers=ORIGIN)
    assert response.status_code == 302, response.content
    return client


def note_model():
    return registry.get_model("notes", "Note")  # installed by the worker fixture, not at import


def notes_of(app):
    with using(provisioning.connect(app)):
        return list(note_model().objects.values_list("title", flat=True))


def test_the_operators_pages_are_the_applications_root_and_the_admin_stays_beside_them():
    start("crm")
    anonymous = Client()
    # The sample's pages ask for the application's own login, its admin's, and come back.
    response = anonymous.get("/apps/crm/")
    assert response.status_code == 302 and response["Location"] == "/apps/crm/admin/login/?next=/apps/crm/"

    client = logged_in("crm")
    page = client.get("/apps/crm/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/apps/crm/static/notes/notes.css"' in html
    assert 'href="/apps/crm/new/"' in html and 'href="/apps/crm/admin/"' in html
    assert 'action="/apps/crm/admin/logout/"' in html
    assert "No notes yet." in html

    admin = client.get("/apps/crm/admin/")
    assert admin.status_code == 200
    assert b'href="/apps/crm/admin/notes/note/"' in admin.content  # its admin, on the hosted site


def test_a_note_posted_with_the_form_lands_in_its_applications_database_only():
    start("crm")
    start("erp")
    client = logged_in("crm")
    form = client.get("/apps/crm/new/")
    assert form.status_code == 200

    # Without the CSRF token: refused, nothing saved.
    refused = client.post("/apps/crm/new/", {"title": "Call Ann", "body": "About the offer"}, headers=ORIGIN)
    assert refused.status_code == 403
    saved = client.post("/apps/crm/new/", {"title": "Call Ann", "body": "About the offer",
                                           "csrfmiddlewaretoken": csrf_token(form)}, headers=ORIGIN)
    assert saved.status_code == 302 and saved["Location"] == "/apps/crm/"
    listed = client.get("/apps/crm/").content.decode()
    assert "Saved “Call Ann”." in listed and "Call Ann" in listed

    assert notes_of("crm") == ["Call Ann"]
    assert notes_of("erp") == []
    erp = logged_in("erp").get("/apps/erp/")
    assert erp.status_code == 200 and b"Call Ann" not in erp.content

    # Edited with the same form, at the note's own address.
    note_id = json.loads(client.get("/apps/crm/api/notes/").content)["notes"][0]["id"]
    edit = client.get(f"/apps/crm/{note_id}/")
    assert edit.status_code == 200 and b'value="Call Ann"' in edit.content
    client.post(f"/apps/crm/{note_id}/", {"title": "Call Ann back", "body": "",
                                          "csrfmiddlewaretoken": csrf_token(edit)}, headers=ORIGIN)
    assert notes_of("crm") == ["Call Ann back"]
    assert client.get("/apps/crm/999/").status_code == 404


def test_a_form_without_a_title_is_shown_again_with_the_reason():
    start("crm")
    client = logged_in("crm")
    form = client.get("/apps/crm/new/")
    response = client.post("/apps/crm/new/", {"title": "  ", "body": "no title",
                                              "csrfmiddlewaretoken": csrf_token(form)}, headers=ORIGIN)
    assert response.status_code == 200
    assert b"This field is required." in response.content and b"no title" in response.content
    assert notes_of("crm") == []


def test_the_list_searches_titles_and_bodies():
    start("crm")
    with using(provisioning.connect("crm")):
        note_model().objects.create(title="Call Ann", body="about the offer")
        note_model().objects.create(title="Invoice 42", body="paid by Ann")
        note_model().objects.create(title="Lunch", body="")
    client = logged_in("crm")
    page = client.get("/apps/crm/", {"q": "ann"}).content.decode()
    assert "Call Ann" in page and "Invoice 42" in page and "Lunch" not in page
    assert "No note matches “nobody”." in client.get("/apps/crm/", {"q": "nobody"}).content.decode()


def test_the_json_endpoint_lists_searches_and_creates_with_the_session_and_csrf_token():
    start("crm")
    anonymous = Client().get("/apps/crm/api/notes/")
    assert anonymous.status_code == 401 and "Log in" in anonymous.json()["error"]

    client = logged_in("crm")
    token = client.cookies["csrftoken_crm"].value  # the application's own CSRF cookie (or the page's token)
    headers = {**ORIGIN, "X-CSRFToken": token}
    created = client.post("/apps/crm/api/notes/", {"title": "Call Ann", "body": "About the offer"},
                          content_type="application/json", headers=headers)
    assert created.status_code == 201, created.content
    note = created.json()
    assert (note["title"], note["body"], note["url"]) == ("Call Ann", "About the offer", f"/apps/crm/{note['id']}/")
    client.post("/apps/crm/api/notes/", {"title": "Lunch"}, content_type="application/json", headers=headers)

    listed = client.get("/apps/crm/api/notes/").json()
    assert listed["count"] == 2 and [n["title"] for n in listed["notes"]] == ["Lunch", "Call Ann"]
    assert [n["title"] for n in client.get("/apps/crm/api/notes/?q=offer").json()["notes"]] == ["Call Ann"]
    assert notes_of("crm") == ["Lunch", "Call Ann"]

    # Without the token, a POST is refused as any form's would be.
    refused = client.post("/apps/crm/api/notes/", {"title": "x"}, content_type="application/json", headers=ORIGIN)
    assert refused.status_code == 403
    assert client.delete("/apps/crm/api/notes/", headers=headers).status_code == 405


@pytest.mark.parametrize(
    ("body", "content_type", "status_code", "answer"),
    [
        ("{not json", "application/json", 400, {"error": "The body is not valid JSON."}),
        ('["Call Ann"]', "application/json", 400, None),
        ('{"title": 42}', "application/json", 400, {"errors": {"title": ["Must be a string."]}}),
        ('{"body": "no title"}', "application/json", 400, {"errors": {"title": ["This field is required."]}}),
        ('{"title": "' + "x" * 201 + '"}', "application/json", 400, None),
        ("title=Call+Ann", "application/x-www-form-urlencoded", 415, {"error": "Send the note as application/json."}),
    ],
)
def test_bad_input_to_the_json_endpoint_is_a_4xx_that_names_the_problem(body, content_type, status_code, answer):
    start("crm")
    client = logged_in("crm")
    response = client.post("/apps/crm/api/notes/", body, content_type=content_type,
                           headers={**ORIGIN, "X-CSRFToken": client.cookies["csrftoken_crm"].value})
    assert response.status_code == status_code, response.content
    if answer is not None:
        assert response.json() == answer
    else:
        assert response.json()["errors" if "title" in body else "error"]
    assert notes_of("crm") == []


def test_the_operators_static_files_are_served_below_each_application():
    start("crm")
    css = Client().get("/apps/crm/static/notes/notes.css")
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")
    assert b"font" in b"".join(css.streaming_content)


def test_the_notes_admin_manages_the_applications_own_notes():
    start("crm")
    with using(provisioning.connect("crm")):
        note_model().objects.create(title="Call Ann")
    client = logged_in("crm")
    changelist = client.get("/apps/crm/admin/notes/note/")
    assert changelist.status_code == 200 and b"Call Ann" in changelist.content
    form = client.get("/apps/crm/admin/notes/note/add/")
    added = client.post("/apps/crm/admin/notes/note/add/", {"title": "From the admin", "body": "",
                                                            "csrfmiddlewaretoken": csrf_token(form)}, headers=ORIGIN)
    assert added.status_code == 302, added.content
    assert sorted(notes_of("crm")) == ["Call Ann", "From the admin"]


# -- an operator's URLconf with mistakes in it ---------------------------------------------------------------------


OPERATOR_URLS = pytest.mark.parametrize("hosted_urlconf", ["tests.operator_urls"])


@OPERATOR_URLS
def test_an_exception_in_an_operators_view_is_a_500_of_that_request_alone(settings):
    start("crm")
    start("erp")
    client = logged_in("crm", raise_request_exception=False)
    failed = client.get("/apps/crm/broken/")
    assert failed.status_code == 500
    assert b"ZeroDivisionError" not in failed.content and b"Traceback" not in failed.content

    # The same application's other pages, its admin, and the other applications answer as before.
    assert client.get("/apps/crm/").status_code == 200
    assert client.get("/apps/crm/admin/").status_code == 200
    assert logged_in("erp").get("/apps/erp/").status_code == 200

    settings.DEBUG = True  # an operator debugging sees why
    assert b"ZeroDivisionError" in client.get("/apps/crm/broken/").content


@OPERATOR_URLS
def test_the_hosted_admin_keeps_admin_when_the_operators_urlconf_also_claims_it():
    start("crm")
    response = Client().get("/apps/crm/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/apps/crm/admin/login/")


@pytest.mark.parametrize("hosted_urlconf", [""])
def test_without_an_operators_urlconf_the_root_leads_to_the_admin():
    start("crm")
    response = Client().get("/apps/crm/")
    assert response.status_code == 302 and response["Location"] == "/apps/crm/admin/"


def test_an_application_not_running_here_answers_for_its_operators_pages_too():
    start("crm")
    status.write(redis_client.supervisor_redis(), "crm", ENV, contract.STOPPED)
    directory.clear()
    response = Client().get("/apps/crm/api/notes/", headers={"Accept": "application/json"})
    assert response.status_code == 503 and response.json()["code"] == "stopped"
