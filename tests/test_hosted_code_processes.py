"""The operator's own code end to end: workers started with APP_HOSTED_APPS and APP_HOSTED_URLCONF serve its pages
through the supervisor's access proxy, beside each application's admin, its rows in the application's own database.
Real processes (supervisor web and controller, two worker webs and agents), real Redis, real HTTP."""

import re
import sqlite3

import pytest
import requests

from .local_cluster import Cluster
from .processes import postgres_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
# env_a hosts the sample as it is; env_b the sample inside a URLconf with a view that raises (tests/operator_urls.py).
HOSTED = {
    "env_a": {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"},
    "env_b": {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "tests.operator_urls"},
}


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides=HOSTED)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        for name, env in (("crm", "env_a"), ("erp", "env_b")):
            created = c.api("POST", "apps/", json={"name": name, "environments": [env], "admin_username": "boss",
                                                   "admin_password": PASSWORD})
            assert created.status_code == 201, created.text
            started = c.api("POST", f"apps/{name}/start")
            assert started.status_code == 200, started.text
        yield c
    finally:
        c.stop()


def csrf(page):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def logged_in(base, app):
    session = requests.Session()
    # The sample's pages send an anonymous visitor to the application's own login, on the supervisor's host.
    anonymous = session.get(f"{base}/apps/{app}/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302
    login = anonymous.headers["Location"]
    assert login.endswith(f"/apps/{app}/admin/login/?next=/apps/{app}/"), login
    login = base + login if login.startswith("/") else login
    page = session.get(login, timeout=30)
    done = session.post(login, data={"csrfmiddlewaretoken": csrf(page), "username": "boss", "password": PASSWORD,
                                     "next": f"/apps/{app}/"},
                        headers={"Origin": base, "Referer": login}, allow_redirects=False, timeout=30)
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/apps/{app}/"), done.text[:2000]
    return session


def rows(cluster, environment, database_name, sqlite_path):
    """The notes' titles in a database of ENVIRONMENT's server: DATABASE_NAME on PostgreSQL, else the SQLite file."""
    if postgres_env("x"):
        import psycopg

        db = postgres_env(database_name)
        with psycopg.connect(host=db["DB_HOST"], port=db["DB_PORT"], user=db["DB_USER"],
                             password=db["DB_PASSWORD"] or None, dbname=database_name) as conn:
            return [row[0] for row in conn.execute("SELECT title FROM notes_note ORDER BY id")]
    with sqlite3.connect(cluster.tmp / environment / sqlite_path) as conn:
        return [row[0] for row in conn.execute("SELECT title FROM notes_note ORDER BY id")]


def test_the_operators_app_is_served_through_the_supervisor_its_rows_in_the_applications_database(cluster):
    base = cluster.base
    session = logged_in(base, "crm")

    # The list page, its stylesheet served below the application, and the hosted admin beside it.
    page = session.get(f"{base}/apps/crm/", timeout=30)
    assert page.status_code == 200 and "No notes yet." in page.text
    assert 'href="/apps/crm/static/notes/notes.css"' in page.text
    css = requests.get(f"{base}/apps/crm/static/notes/notes.css", timeout=30)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    admin = session.get(f"{base}/apps/crm/admin/", timeout=30)
    assert admin.status_code == 200 and 'href="/apps/crm/admin/notes/note/"' in admin.text

    # A note from the form page: its CSRF token, the browser's Origin.
    form_url = f"{base}/apps/crm/new/"
    saved = session.post(form_url, data={"csrfmiddlewaretoken": csrf(session.get(form_url, timeout=30)),
                                         "title": "Call Ann", "body": "About the offer"},
                         headers={"Origin": base, "Referer": form_url}, allow_redirects=False, timeout=30)
    assert saved.status_code == 302 and saved.headers["Location"].endswith("/apps/crm/"), saved.text[:2000]
    assert "Call Ann" in session.get(f"{base}/apps/crm/", timeout=30).text

    # A note from the JSON endpoint: the session, and the CSRF token of the application's own cookie.
    token = session.cookies.get("csrftoken_crm", path="/apps/crm/")
    created = session.post(f"{base}/apps/crm/api/notes/", json={"title": "Send the invoice"},
                           headers={"Origin": base, "X-CSRFToken": token}, timeout=30)
    assert created.status_code == 201, created.text
    assert created.json()["url"] == f"/apps/crm/{created.json()['id']}/"
    listed = session.get(f"{base}/apps/crm/api/notes/", timeout=30).json()
    assert [note["title"] for note in listed["notes"]] == ["Send the invoice", "Call Ann"]
    assert requests.get(f"{base}/apps/crm/api/notes/", timeout=30).status_code == 401

    # The rows are in crm's own database; not in the worker's, nor in another application's.
    assert rows(cluster, "env_a", "app_crm", "apps/crm.sqlite3") == ["Call Ann", "Send the invoice"]
    assert rows(cluster, "env_a", "appsup_it_env_a", "worker.sqlite3") == []
    assert rows(cluster, "env_b", "app_erp", "apps/erp.sqlite3") == []
    erp_session = logged_in(base, "erp")
    erp = erp_session.get(f"{base}/apps/erp/api/notes/", timeout=30)
    assert erp.status_code == 200 and erp.json() == {"count": 0, "notes": []}

    # An operator's view that raises (env_b's URLconf has one): a 500 that tells the client nothing, the traceback
    # in the worker's log; that application's other pages and admin, and the other worker's, answer as before.
    failed = erp_session.get(f"{base}/apps/erp/broken/", timeout=30)
    assert failed.status_code == 500
    assert "ZeroDivisionError" not in failed.text and "Traceback" not in failed.text
    wait_for(lambda: "ZeroDivisionError: the operator's bug" in cluster.webs["env_b"].output(), what="the log")
    assert erp_session.get(f"{base}/apps/erp/", timeout=30).status_code == 200
    erp_admin = erp_session.get(f"{base}/apps/erp/admin/", timeout=30)
    assert erp_admin.status_code == 200 and "the operator's page" not in erp_admin.text  # admin/ stays the admin's
    assert session.get(f"{base}/apps/crm/", timeout=30).status_code == 200
