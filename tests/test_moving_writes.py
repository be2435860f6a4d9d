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
