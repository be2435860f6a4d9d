"""An origin per application on a worker: with APP_APPS_DOMAIN, <name>.<domain> serves the application mounted at /
(its links, redirects and cookies as on a host of its own), and a custom domain only for the application that
claims it. In-process, with Django's test client against the worker configuration (as tests/test_hosting.py)."""

import pytest
from django.test import Client

from exchange.directory import directory
from workers import keys

from .factories import PASSWORD
from .test_hosting import csrf_token, start
from .test_hosting import worker as worker  # noqa: F401  (the fixture: this process is worker env_a)

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "crm.apps.test"


@pytest.fixture(autouse=True)
def apps_domain(settings, worker):  # noqa: F811
    settings.APP_APPS_DOMAIN = "apps.test"
    settings.ALLOWED_HOSTS = ["testserver", ".apps.test", "crm.example.com"]


def test_an_application_on_its_own_host_sees_its_paths_unprefixed_and_its_links_work():
    start("crm")
    client = Client(enforce_csrf_checks=True, HTTP_HOST=HOST)

    anonymous = client.get("/admin/")
    assert anonymous.status_code == 302 and anonymous["Location"] == "/admin/login/?next=/admin/"
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200
    assert b'action="/admin/login/?next=/admin/"' in page.content
    assert b'href="/static/admin/css/base.css"' in page.content
    assert client.get("/static/admin/css/base.css").status_code == 200

    logged_in = client.post("/admin/login/?next=/admin/", {
        "username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(page)},
        headers={"Origin": f"http://{HOST}"})
    assert logged_in.status_code == 302 and logged_in["Location"] == "/admin/", logged_in.content[:500]
    # Its cookies are for its whole host (Path=/), never a Domain another host would share.
    session = logged_in.cookies["sessionid_crm"]
    assert session["path"] == "/" and not session["domain"]
    index = client.get("/admin/")
    assert index.status_code == 200 and b'href="/admin/auth/user/"' in index.content


def test_an_applications_own_host_serves_that_application_only():
    start("crm")
    start("erp")
    client = Client(HTTP_HOST="erp.apps.test")
    # /apps/crm/ on erp's host is erp's own path, not crm.
    assert client.get("/apps/crm/admin/").status_code == 404
    assert client.get("/admin/").status_code == 302
    # An application that does not exist, by its host.
    assert Client(HTTP_HOST="nosuch.apps.test").get("/admin/").status_code == 404


def test_a_custom_domain_serves_only_the_application_that_claims_it():
    start("crm")
    # crm claims no custom domain: naming it in X-Appsup-App does not make crm answer there.
    client = Client(HTTP_HOST="crm.example.com", HTTP_X_APPSUP_APP="crm")
    assert client.get("/admin/").status_code == 404


def test_each_application_signs_with_its_own_key_derived_from_the_workers(settings):
    from django.core import signing

    settings.SECRET_KEY = keys.PerApplicationKey("the-worker-secret-key-0123456789")
    tokens = {}
    for name in ("crm", "erp"):
        reset = keys.current_application.set(name)
        try:
            tokens[name] = signing.dumps({"user": 1})
            assert str(settings.SECRET_KEY) not in ("the-worker-secret-key-0123456789", "")
        finally:
            keys.current_application.reset(reset)
    assert str(settings.SECRET_KEY) == "the-worker-secret-key-0123456789"
    with pytest.raises(signing.BadSignature):
        signing.loads(tokens["crm"])  # not with the worker's own key
    reset = keys.current_application.set("erp")
    try:
        assert signing.loads(tokens["erp"]) == {"user": 1}
        with pytest.raises(signing.BadSignature):
            signing.loads(tokens["crm"])  # nor with another application's
    finally:
        keys.current_application.reset(reset)
    assert keys.derive("s", "crm") == keys.derive("s", "crm") != keys.derive("s", "erp")
    assert "the-worker" not in repr(settings.SECRET_KEY)


def test_a_hosted_application_is_served_with_its_own_key():
    start("crm")
    seen = []

    from django.conf import settings as live

    def spy(request):
        seen.append(str(live.SECRET_KEY))

    directory.clear()
    from django.test import override_settings

    with override_settings(SECRET_KEY=keys.PerApplicationKey("worker-secret-0123456789abcdef")):
        from django.contrib.auth.signals import user_login_failed

        user_login_failed.connect(lambda sender, request=None, **kw: spy(request), weak=False, dispatch_uid="spy")
        try:
            client = Client(HTTP_HOST=HOST)
            page = client.get("/admin/login/")
            client.post("/admin/login/", {"username": "admin", "password": "wrong",
                                          "csrfmiddlewaretoken": csrf_token(page)})
        finally:
            user_login_failed.disconnect(dispatch_uid="spy")
    assert seen == [keys.derive("worker-secret-0123456789abcdef", "crm")]
