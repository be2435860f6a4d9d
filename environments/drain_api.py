"""JSON API: ``POST /api/environments/<name>/drain`` and ``…/undrain`` (docs/architecture.md, "Draining an
environment"). Thin: the drain is marked and answered at once (202 with the environment, ``status`` draining); the
controller moves the applications away, one a pass, and ``GET /api/environments/`` shows the progress."""

from django.utils import timezone

from api.auth import api_view, error, json_response

from . import drain
from .api import environment_dict, named


def _progress(environment):
    return dict(environment_dict(environment, timezone.now()),
                applications=sorted(environment.applications.values_list("name", flat=True)))


@api_view("POST", permission="environments.change_environment")
def environment_drain(request, name):
    environment = named(name)
    if environment is None:
        return error(f"no environment named {name!r}", 404)
    drain.request(environment)
    return json_response(_progress(environment), status=202)


@api_view("POST", permission="environments.change_environment")
def environment_undrain(request, name):
    environment = named(name)
    if environment is None:
        return error(f"no environment named {name!r}", 404)
    drain.undrain(environment)
    return json_response(_progress(environment))
