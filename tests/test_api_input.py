"""What the JSON API does with request bodies it should not take (docs/architecture.md, "Trust"): too large (413),
not JSON or too deeply nested (400), not application/json (415), wrongly typed fields (400 naming them). Nothing of
it is ever stored, and none of it is a 500."""

import json

import pytest

from api.auth import MAX_JSON_DEPTH
from apps.models import Application

from .factories import PASSWORD, create_application, register_environment

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_APP = {
    "name": "crm",
    "display_name": "Customer relations",
    "environments": ["env_a"],
    "admin_username": "boss",
    "admin_password": PASSWORD,
}
THREE_MB = 3 * 1024 * 1024


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def env_a(controller_running):
    register_environment("env_a")


def send(client, path, body, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data, content_type=content_type, headers=AUTH)


def field_errors(response):
    assert response.status_code == 400, response.content
    return response.json()["errors"]


# -- 413 -----------------------------------------------------------------------------------------------------


def test_a_body_past_the_upload_limit_is_a_413_in_the_json_envelope(client, env_a):
    body = json.dumps(dict(NEW_APP, display_name="x" * THREE_MB))

    response = send(client, "/api/apps/", body)

    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert not Application.objects.exists()


def test_the_limit_is_the_settings_one(client, env_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = send(client, "/api/apps/", dict(NEW_APP, display_name="x" * 200))

    assert response.status_code == 413
    assert "100 bytes" in response.json()["error"]


def test_a_large_body_on_a_command_is_a_413_too(client, env_a):
    create_application("crm", ["env_a"])
    response = send(client, "/api/apps/crm/start", "[" + " " * THREE_MB + "]")
    assert response.status_code == 413


def test_a_large_form_body_from_a_staff_session_is_a_413_not_an_html_400(admin_client):
    # The CSRF check would read a form body whole; the size is refused from its header first.
    response = admin_client.post("/api/apps/", "a=" + "x" * THREE_MB,
                                 content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"


# -- 400: malformed or too deeply nested JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
    ],
    ids=["unclosed-100000", "closed-100000", "objects-100000", "one-past-the-limit"],
)
def test_too_deeply_nested_json_is_a_400_not_a_recursion_error(client, body):
    errors = field_errors(send(client, "/api/apps/", body))
    assert list(errors) == ["__all__"]
    assert f"deeper than {MAX_JSON_DEPTH}" in errors["__all__"][0]


def test_nesting_up_to_the_limit_is_parsed_and_brackets_inside_strings_do_not_count(client, env_a):
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)  # the object is the 20th level
    body = '{"display_name": "' + "[" * 100 + '\\"{", "name": ' + deep + "}"

    errors = field_errors(send(client, "/api/apps/", body))

    assert errors["name"] == ["Give a string."]
    assert "display_name" not in errors


@pytest.mark.parametrize(
    "body",
    ["{not json", '{"name": NaN}', '{"name": Infinity}', '{"name": -Infinity}', '{"name": "crm",}',
     '{"n": ' + "9" * 5000 + "}", b"\xff\xfe", '{"name": "crm"} trailing'],
    ids=["garbage", "nan", "infinity", "-infinity", "trailing-comma", "5000-digit-integer", "not-utf8",
         "trailing-text"],
)
def test_malformed_json_is_a_400_for_the_whole_body(client, body):
    errors = field_errors(send(client, "/api/apps/", body))
    assert list(errors) == ["__all__"]
    assert not Application.objects.exists()


# -- 400: wrongly typed fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "display_name", "admin_username", "admin_password"])
@pytest.mark.parametrize("value", [123, 1.5, True, None, ["crm"], {"a": "b"}], ids=repr)
def test_a_string_field_of_another_json_type_is_a_400_naming_it_and_nothing_is_stored(client, env_a, field, value):
    errors = field_errors(send(client, "/api/apps/", dict(NEW_APP, **{field: value})))

    assert errors == {field: ["Give a string."]}
    assert not Application.objects.exists()


@pytest.mark.parametrize("value", ["env_a", "env_a,env_b", ["env_a", 1], [None], [["env_a"]], {"env_a": 1}, 5, None],
                         ids=repr)
def test_environments_must_be_a_list_of_strings(client, env_a, value):
    errors = field_errors(send(client, "/api/apps/", dict(NEW_APP, environments=value)))

    assert errors == {"environments": ["Give a list of environment names."]}
    assert not Application.objects.exists()


def test_every_wrongly_typed_field_is_named_beside_the_others_errors(client, env_a):
    body = dict(NEW_APP, name=7, display_name=["x"], admin_password="short")

    errors = field_errors(send(client, "/api/apps/", body))

    assert set(errors) == {"name", "display_name", "admin_password"}
    assert errors["name"] == errors["display_name"] == ["Give a string."]


def test_a_lone_surrogate_is_refused_rather_than_stored(client, env_a):
    body = json.dumps(NEW_APP).replace("Customer relations", "bad \\ud800 text")

    errors = field_errors(send(client, "/api/apps/", body))

    assert list(errors) == ["display_name"] and "surrogate" in errors["display_name"][0]
    assert not Application.objects.exists()


def test_a_nul_character_is_refused_rather_than_stored(client, env_a):
    errors = field_errors(send(client, "/api/apps/", dict(NEW_APP, display_name="a\x00b")))
    assert list(errors) == ["display_name"]


# -- 415 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/jsonp",
     "application/json; charset=latin-1"],
)
def test_a_create_that_is_not_application_json_is_a_415(client, env_a, content_type):
    response = send(client, "/api/apps/", json.dumps(NEW_APP), content_type=content_type)

    assert response.status_code == 415
    assert "application/json" in response.json()["error"] or "UTF-8" in response.json()["error"]
    assert not Application.objects.exists()


def test_a_body_without_any_content_type_is_a_415(client, env_a):
    response = client.generic("POST", "/api/apps/", json.dumps(NEW_APP).encode(), content_type="", headers=AUTH)

    assert response.status_code == 415
    assert "no Content-Type" in response.json()["error"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/json;charset=UTF-8",
                                          "Application/JSON"])
def test_json_with_a_utf8_charset_or_in_any_case_is_taken(client, env_a, content_type):
    response = send(client, "/api/apps/", json.dumps(NEW_APP), content_type=content_type)
    assert response.status_code == 201, response.json()


def test_a_command_with_a_form_body_is_a_415(client, env_a):
    create_application("crm", ["env_a"])
    response = send(client, "/api/apps/crm/stop", "a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.django_db(transaction=True)  # lifecycle operations refuse to run inside a transaction
def test_a_bare_post_of_a_command_needs_no_content_type(client):
    register_environment("env_b", heartbeat_at=0)  # offline: the start waits (202), past the content checks
    create_application("crm", ["env_b"])

    response = client.generic("POST", "/api/apps/crm/start", headers=AUTH)

    assert response.status_code == 202
    assert response.json()["environment"] == "env_b"


def test_an_empty_create_without_a_content_type_is_a_400_as_an_empty_json_body_is(client):
    response = client.generic("POST", "/api/apps/", headers=AUTH)
    assert list(field_errors(response)) == ["__all__"]


# -- names in the path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("name", ["a%00b", "crm%0A", "CRM", "x" * 41, "%C3%A9t%C3%A9"])
def test_a_path_name_no_application_can_have_is_a_404_on_any_database(client, env_a, method, name):
    # PostgreSQL refuses a NUL in a query outright: such a name must never reach one.
    create_application("crm", ["env_a"])
    response = getattr(client, method)(f"/api/apps/{name}/", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["environment"] is None
