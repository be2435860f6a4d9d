"""apps.models: the querysets pages and the controller filter with (drifting, needing attention) say of every
application what the application says of itself, in every combination of desired state, reported state and
environment status."""

import itertools

import pytest

from apps.models import Application, Placement
from environments.models import Environment
from exchange import contract

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db


def test_drifting_and_needing_attention_agree_with_each_application(r):
    register_environment("up")
    register_environment("down", heartbeat_at=0)
    register_environment("ill")
    Environment.objects.filter(name="ill").update(web_ok=False, problem="no answer")
    combinations = list(itertools.product(contract.DESIRED_STATES, contract.RUNTIME_STATES, ("up", "down", "ill")))
    for i, (desired, state, env) in enumerate(combinations):
        app = create_application(f"app{i}", [env, "up"] if i % 2 and env != "up" else [env])
        Application.objects.filter(pk=app.pk).update(desired_state=desired)
        Placement.objects.filter(application=app).update(state=desired)
        Placement.objects.filter(application=app, environment__name=env).update(state=state)
    Application.objects.filter(name="app0").update(attempts=1)  # in sync, but the controller failed once

    apps = list(Application.objects.with_placements())
    drifting = {a.name for a in Application.objects.drifting()}
    attention = {a.name for a in Application.objects.filter(Application.objects.needing_attention())}
    calm = {a.name for a in Application.objects.exclude(Application.objects.needing_attention())}

    assert drifting == {a.name for a in apps if any(p.state != a.desired_state for p in a.ordered_placements())}
    assert attention == {a.name for a in apps if a.needs_attention()}
    assert calm == {a.name for a in apps} - attention
    assert "app0" in attention and drifting and calm  # each set has members: the comparison means something
