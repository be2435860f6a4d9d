"""GET /api/schema/: the OpenAPI document of the JSON API. It must be valid OpenAPI 3, cover every endpoint, and
hold for what the API answers: schemathesis generates requests from it (valid and not) and checks the answers
against it, and that none is a 5xx."""

import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.urls import resolve
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api import auth as api_auth
from api.openapi import DOCUMENT
from apps.models import Application
from supervisor_project.urls import api_patterns
from supervisor_project.wsgi import application as wsgi_application

from .factories import create_application, mirror, register_environment

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


def operations():
    return [(path, method) for path, item in DOCUMENT["paths"].items() for method in METHODS if method in item]


# -- the document --------------------------------------------------------------------------------------------


def test_the_served_document_is_valid_openapi_3_and_needs_no_credentials(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    validate(document)  # raises, naming the problem, when the document is not valid OpenAPI
    assert document["openapi"].startswith("3.")
    assert document == DOCUMENT


def test_the_schema_endpoint_takes_get_only(client):
    response = client.post("/api/schema/", {}, content_type="application/json")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_every_documented_operation_is_an_endpoint():
    for path, _ in operations():
        match = resolve(path.replace("{name}", "crm"))
        assert match.func is not api_auth.not_found, path


def test_every_endpoint_is_documented():
    documented = {resolve(path.replace("{name}", "crm")).url_name for path, _ in operations()}
    endpoints = {pattern.name for pattern in api_patterns if pattern.callback is not api_auth.not_found}
    assert endpoints <= documented


@pytest.mark.parametrize("path, method", operations())
def test_every_operation_documents_its_refusals(path, method):
    operation = DOCUMENT["paths"][path][method]
    answers = set(operation["responses"])
    if path != "/api/schema/":
        assert "401" in answers, "every endpoint but the schema needs credentials"
    if method == "post":
        assert {"403", "413", "415"} <= answers
    if path.startswith("/api/apps/{name}/") and method in ("post", "delete") and not path.endswith("/signin-link"):
        # An operation that changes the application (a sign-in link changes nothing, waits for nothing).
        assert {"400", "404", "409", "423", "503", "504"} <= answers


@pytest.mark.parametrize("path, method", operations())
def test_every_operation_names_the_permission_its_endpoint_enforces(path, method):
    operation = DOCUMENT["paths"][path][method]
    view = resolve(path.replace("{name}", "crm")).func
    assert list(view.permissions[method.upper()]) == operation.get("x-permission", []), (path, method)
    if path != "/api/schema/":
        assert operation["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}


# -- fuzzing -------------------------------------------------------------------------------------------------


@pytest.fixture
def served_in_process(transactional_db):
    """Requests go straight to Django's WSGI handler, in this thread; like Django's test client, keep it from
    closing the test's database connection at the end of each request."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(served_in_process):
    """An application to find (crm, the schema's example name) on environments that are offline, so that start,
    stop and restart answer 202 (waiting) and delete 409 at once instead of waiting for a worker (or their timeout)."""
    register_environment("env_a", heartbeat_at=0)
    register_environment("env_b", heartbeat_at=0)
    mirror()
    create_application("crm", ["env_a", "env_b"])


# Loaded from the module, not from a fixture: schemathesis's from_fixture reaches into a private attribute that
# pytest 9 no longer has. test_the_served_document_… holds the served document to this one.
schema = schemathesis.openapi.from_dict(DOCUMENT)
# The suite's run is the same every time (a failure in CI is one anyone can replay); API_FUZZ_EXAMPLES=500, say,
# explores further, with fresh random inputs on each run.
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = "API_FUZZ_EXAMPLES" not in os.environ
schema.app = wsgi_application  # what from_wsgi sets: requests go to Django's WSGI handler, in this process
schema.config.update(base_url="http://localhost")


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
def test_no_generated_request_is_answered_with_a_5xx_or_off_the_document(case, seeded, settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    # A create or a change that fits the document can still be refused: a taken name, an unknown environment, a
    # common password; and a move: environments that do not exist, or where it cannot go; an upgrade of
    # applications that do not exist, a command name no command has. Everything else schemathesis checks holds for
    # every operation.
    refusable = ("POST /api/apps/", "PATCH /api/apps/{name}/", "POST /api/apps/{name}/move", "POST /api/upgrade",
                 "POST /api/apps/{name}/command")
    excluded = [positive_data_acceptance] if case.operation.label in refusable else []
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)


@pytest.mark.django_db(transaction=True)
def test_the_fuzzed_apps_stay_on_offline_environments(seeded, client):
    # What the fuzzing relies on: the seeded application's commands fail fast.
    response = client.generic("POST", "/api/apps/crm/start?timeout=3600", headers=AUTH)
    assert response.status_code == 202 and response.json()["environment"] == "env_a"
    assert Application.objects.filter(name="crm").exists()
