"""Custom domains of an application (apps.models.Domain): edited on the admin's change page, one application per
domain, valid names only, outside APP_APPS_DOMAIN and the supervisor's hosts; in the configuration cache workers
read, and in the API's APP."""

import pytest

from apps.models import Application, Domain
from exchange import cache
from exchange.redis_client import supervisor_redis

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def origins(settings):
    settings.APP_APPS_DOMAIN = "apps.test"
    settings.APP_SUPERVISOR_HOSTS = ("admin.test", "testserver")
    register_environment("env_a")


def change(client, app, domains):
    return client.post(f"/admin/apps/application/{app.pk}/change/", {
        "display_name": app.display_name, "custom_domains": domains, "concurrency": "", "request_timeout": ""})


def test_the_admin_edits_an_applications_custom_domains_and_the_cache_carries_them(admin_client):
    crm = create_application("crm", ["env_a"])
    page = admin_client.get(f"/admin/apps/application/{crm.pk}/change/")
    assert b'name="custom_domains"' in page.content
    answer = change(admin_client, crm, "CRM.Example.com\ncrm.example.org.\n\ncrm.example.com")
    assert answer.status_code == 302, answer.content[:3000]
    assert crm.domain_names() == ["crm.example.com", "crm.example.org"]
    assert cache.lookup(supervisor_redis(), "crm")["domains"] == ["crm.example.com", "crm.example.org"]
    assert admin_client.get("/api/apps/crm/").json()["domains"] == ["crm.example.com", "crm.example.org"]
    assert admin_client.get("/api/apps/").json()["apps"][0]["domains"] == ["crm.example.com", "crm.example.org"]

    assert change(admin_client, crm, "crm.example.org").status_code == 302
    assert crm.domain_names() == ["crm.example.org"]
    assert cache.lookup(supervisor_redis(), "crm")["domains"] == ["crm.example.org"]


@pytest.mark.parametrize("domains, message", [
    ("not a domain", b"is not a domain name"),
    ("localhost", b"is not a domain name"),
    ("erp.apps.test", b"is under APP_APPS_DOMAIN"),
    ("admin.test", b"the supervisor&#x27;s own hosts"),
    ("shop.example.com", b"already a domain of application shop"),
])
def test_a_domain_that_is_invalid_or_someone_elses_is_refused_and_nothing_changes(admin_client, domains, message):
    crm = create_application("crm", ["env_a"])
    shop = create_application("shop", ["env_a"])
    Domain.objects.create(application=shop, name="shop.example.com")
    Domain.objects.create(application=crm, name="crm.example.com")
    answer = change(admin_client, crm, f"crm.example.org\n{domains}")
    assert answer.status_code == 200 and message in answer.content
    assert Application.objects.get(pk=crm.pk).domain_names() == ["crm.example.com"]
