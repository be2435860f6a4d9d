"""While an application moves away from an environment, that environment answers its reads and refuses its writes
(workers.hosting.moving_refusal), and takes the move's commands for it (workers.agent): nothing written there during
the copy can be lost."""

from types import SimpleNamespace

import pytest

from workers import agent, hosting


def view(moving=None):
    return SimpleNamespace(config={"display_name": "CRM", **({"moving": moving} if moving else {})})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_the_source_refuses_writes_while_the_application_moves_away(method):
    refused = hosting.moving_refusal("crm", view({"from": "env_a", "to": "env_b"}), "env_a", method)
    assert (refused.status, refused.code, refused.retry_after) == (503, "moving", hosting.MOVING_RETRY_AFTER)
    assert "env_b" in refused.message


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_the_source_keeps_answering_reads(method):
    assert hosting.moving_refusal("crm", view({"from": "env_a", "to": "env_b"}), "env_a", method) is None


def test_nothing_is_refused_elsewhere_or_when_nothing_moves():
    assert hosting.moving_refusal("crm", view({"from": "env_a", "to": "env_b"}), "env_b", "POST") is None
    assert hosting.moving_refusal("crm", view(), "env_a", "POST") is None
    assert hosting.moving_refusal("crm", view("garbage"), "env_a", "POST") is None


def test_both_ends_of_a_move_take_its_commands():
    entry = {"environments": ["env_a"], "moving": {"from": "env_a", "to": "env_b"}}
    assert set(agent._moving(entry)) == {"env_a", "env_b"}
    assert agent._moving({"environments": ["env_a"]}) == []
    assert agent._moving({"moving": "garbage"}) == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_source_answers_a_request_routed_before_the_switch_as_moving_not_unknown_here(method):
    # Switched to env_b and not yet removed from env_a: a request the proxy sent to env_a a moment before the switch
    # arrives after it.
    switched = SimpleNamespace(name="crm", environment_names=["env_b"], statuses={},
                               config={"display_name": "CRM", "moving": {"from": "env_a", "to": "env_b"}})
    refused = hosting.availability("crm", switched, "env_a") or hosting.moving_refusal("crm", switched, "env_a",
                                                                                       method)
    assert (refused.status, refused.code, refused.retry_after) == (503, "moving", hosting.MOVING_RETRY_AFTER)


def test_an_application_placed_elsewhere_and_not_moving_from_here_is_not_hosted_here():
    elsewhere = SimpleNamespace(name="crm", environment_names=["env_b"], statuses={},
                                config={"display_name": "CRM", "moving": {"from": "env_c", "to": "env_b"}})
    refused = hosting.availability("crm", elsewhere, "env_a")
    assert (refused.status, refused.code) == (404, "not_on_this_environment")
