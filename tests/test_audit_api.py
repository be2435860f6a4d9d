"""The API's part of the audit log: every call that may change something is recorded once, with its caller (a
session's user, a per-user token, the bootstrap token, or nobody), refusals included; ``GET /api/audit/`` reads the
log with filters and pages; every answer carries its request id."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apitokens.models import ApiToken
from apps.models import Application
from audit import actions
from audit import log as audit
from audit.models import Entry

from .factories import ThreadAgent, create_application, register_environment, staff_user

pytestmark = pytest.mark.django_db

TOKEN = "bootstrap-token-for-the-audit-log-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_APP = {"name": "erp", "display_name": "ERP", "environments": ["env_a"], "admin_username": "boss",
           "admin_password": "correct-horse-battery"}


@pytest.fixture(autouse=True)
def crm(settings, controller_running, r):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    register_environment("env_a")
    return create_application("crm", ["env_a"])


def issued(user, name="deploy"):
    api_token = ApiToken(user=user, name=name)
    token = api_token.issue()
    api_token.save()
    return token


def only_entry(**filters):
    entries = list(Entry.objects.filter(**filters))
    assert len(entries) == 1, entries
    return entries[0]


def test_a_refused_write_is_recorded_with_the_session_user_and_the_missing_permission(client):
    client.force_login(staff_user("intern"))

    answer = client.post("/api/apps/crm/start", content_type="application/json")

    assert answer.status_code == 403
    entry = only_entry()
    assert (entry.actor_kind, entry.actor, entry.action, entry.target) == (
        "user", "intern", "application.start", "application:crm")
    assert (entry.outcome, entry.status) == ("refused", 403)
    assert "apps.operate_application" in entry.detail
    assert entry.request_id == answer["X-Request-ID"]


def test_a_create_is_recorded_with_its_body_but_never_the_password(client):
    answer = client.post("/api/apps/", json.dumps(NEW_APP), content_type="application/json", headers=AUTH)

    assert answer.status_code == 201
    entry = only_entry()
    assert (entry.actor_kind, entry.actor, entry.action, entry.target, entry.outcome, entry.status) == (
        "token", "SUPERVISOR_API_TOKEN", "application.create", "application:erp", "ok", 201)
    assert entry.parameters["body"]["environments"] == ["env_a"]
    assert entry.parameters["body"]["admin_password"] == audit.REMOVED
    assert "correct-horse-battery" not in json.dumps(entry.parameters)


@pytest.mark.django_db(transaction=True)  # lifecycle operations run outside any transaction
def test_a_start_through_a_per_user_token_is_recorded_as_that_token_of_its_user(client):
    token = issued(staff_user("deployer", "apps.operate_application"), name="pipeline")

    with ThreadAgent("env_a"):
        answer = client.post("/api/apps/crm/start?timeout=30", content_type="application/json",
                             headers={"Authorization": f"Bearer {token}"})

    assert answer.status_code == 200
    entry = only_entry(action=actions.APPLICATION_START)
    assert entry.actor_kind == "token"
    assert entry.actor.startswith("pipeline (appsup_") and entry.actor.endswith(" of deployer")
    assert token not in entry.actor and token not in json.dumps(entry.parameters)
    assert (entry.target, entry.outcome, entry.parameters["query"]) == ("application:crm", "ok", {"timeout": "30"})


def test_a_call_without_credentials_is_recorded_as_anonymous_without_its_body(client):
    answer = client.post("/api/apps/", json.dumps(NEW_APP), content_type="application/json",
                         REMOTE_ADDR="203.0.113.9")

    assert answer.status_code == 401
    entry = only_entry()
    assert (entry.actor_kind, entry.actor, entry.outcome, entry.status) == ("anonymous", "no credentials",
                                                                            "refused", 401)
    assert entry.address == "203.0.113.9" and "body" not in entry.parameters


def test_a_wrong_token_beside_a_session_is_recorded_as_a_refused_token_not_as_the_user(client):
    client.force_login(staff_user("intern"))

    answer = client.delete("/api/apps/crm/", headers={"Authorization": "Bearer appsup_forged-token-value"})

    assert answer.status_code == 401
    entry = only_entry()
    assert (entry.actor_kind, entry.actor, entry.action) == ("anonymous", "refused bearer token",
                                                             "application.delete")
    assert "forged" not in str(entry.parameters) + entry.detail


def test_reads_are_not_recorded(client):
    assert client.get("/api/apps/", headers=AUTH).status_code == 200
    assert client.get("/api/apps/crm/", headers=AUTH).status_code == 200
    assert not Entry.objects.exists()


def test_an_unknown_path_and_a_bad_body_are_recorded_as_refused(client):
    client.post("/api/nothing-here", content_type="application/json", headers=AUTH)
    client.post("/api/apps/", "{not json", content_type="application/json", headers=AUTH)

    assert sorted(Entry.objects.values_list("action", "status", "outcome")) == [
        ("api.unknown", 404, "refused"), ("application.create", 400, "refused")]


def test_a_well_formed_request_id_is_kept_and_any_other_replaced(client):
    kept = client.post("/api/apps/crm/stop", content_type="application/json",
                       headers={**AUTH, "X-Request-ID": "trace-42.a"})
    replaced = client.post("/api/apps/crm/stop", content_type="application/json",
                           headers={**AUTH, "X-Request-ID": "<script>"})

    assert kept["X-Request-ID"] == "trace-42.a"
    assert replaced["X-Request-ID"] != "<script>" and len(replaced["X-Request-ID"]) == 32
    assert sorted(Entry.objects.values_list("request_id", flat=True)) == sorted(["trace-42.a",
                                                                                  replaced["X-Request-ID"]])
    assert client.get("/healthz")["X-Request-ID"]  # every answer of the supervisor has one


# -- GET /api/audit/ ---------------------------------------------------------------------------------------------

def seed():
    now = timezone.now()
    alice, ci = audit.Actor(actions.USER, "alice"), audit.Actor(actions.TOKEN, "ci (appsup_ab…) of bob")
    audit.record(alice, actions.APPLICATION_START, "application:crm", at=now - timedelta(days=3))
    audit.record(ci, actions.APPLICATION_STOP, "application:crm", outcome=actions.FAILED, at=now - timedelta(days=2))
    audit.record(ci, actions.ENVIRONMENT_DRAIN, "environment:env_a", outcome=actions.REFUSED, at=now - timedelta(days=1))
    audit.record(alice, actions.APPLICATION_START, "application:erp", at=now)
    return now


@pytest.mark.parametrize("query, targets", [
    ("", ["application:erp", "environment:env_a", "application:crm", "application:crm"]),
    ("?actor=ALICE", ["application:erp", "application:crm"]),
    ("?actor_kind=token", ["environment:env_a", "application:crm"]),
    ("?action=application.start", ["application:erp", "application:crm"]),
    ("?action=application.", ["application:erp", "application:crm", "application:crm"]),
    ("?target=application:crm", ["application:crm", "application:crm"]),
    ("?outcome=refused", ["environment:env_a"]),
    ("?actor=bob&outcome=failed", ["application:crm"]),
])
def test_the_log_is_read_newest_first_with_filters(client, query, targets):
    seed()
    answer = client.get(f"/api/audit/{query}", headers=AUTH)

    assert answer.status_code == 200
    assert [entry["target"] for entry in answer.json()["entries"]] == targets


def test_since_and_until_bound_the_time(client):
    now = seed()
    since = (now - timedelta(days=2, hours=1)).isoformat()
    until = (now - timedelta(hours=1)).isoformat()

    answer = client.get("/api/audit/", {"since": since, "until": until}, headers=AUTH)

    assert [e["action"] for e in answer.json()["entries"]] == ["environment.drain", "application.stop"]


def test_the_log_is_paged_by_id(client):
    seed()
    first = client.get("/api/audit/?limit=3", headers=AUTH).json()
    second = client.get(first["next"], headers=AUTH).json()

    assert len(first["entries"]) == 3 and [e["target"] for e in second["entries"]] == ["application:crm"]
    assert second["next"] is None
    assert first["entries"][-1]["id"] > second["entries"][0]["id"]


@pytest.mark.parametrize("query, named", [
    ("?outcome=maybe", "outcome"), ("?actor_kind=robot", "actor_kind"), ("?since=yesterday", "since"),
    ("?until=2026-13-45", "until"), ("?limit=0", "limit"), ("?after=abc", "after"),
])
def test_a_bad_filter_is_a_400_naming_it(client, query, named):
    answer = client.get(f"/api/audit/{query}", headers=AUTH)

    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{named}=")


def test_reading_the_log_needs_the_view_permission(client):
    seed()
    client.force_login(staff_user("intern"))
    refused = client.get("/api/audit/")
    assert (refused.status_code, refused.json()["permission"]) == (403, "audit.view_entry")

    client.force_login(staff_user("auditor", "audit.view_entry"))
    assert len(client.get("/api/audit/").json()["entries"]) == 4


def test_the_entry_has_every_documented_field(client):
    seed()
    entry = client.get("/api/audit/?limit=1", headers=AUTH).json()["entries"][0]

    assert set(entry) == {"id", "at", "actor_kind", "actor", "action", "target", "parameters", "outcome", "status",
                          "detail", "request_id", "address"}
    assert Application.objects.filter(name="crm").exists()
