"""JSON API: ``POST /api/apps/<name>/signin-link`` (docs/api.md): a one-time link that signs the caller into the
application's admin on one environment, as the admin's "Open as operator" does (apps/signin.py).

Body ``{"environment": name}`` (optional when the application is on one environment). Answers 200 ``{"url", "app",
"environment", "user", "expires_in"}``; 400 (bad body, or an environment it is not on), 403 for the bootstrap
token (a link signs a person in: use a staff session or a per-user token), 404 (no such application).
"""

from django.conf import settings

from api.auth import api_view, error, json_response, malformed, read_json

from . import api, signin
from .models import OPERATE_PERMISSION


@api_view("POST", permission=OPERATE_PERMISSION)
def app_signin_link(request, name):
    application, _, refusal = api.target(request, name)
    if refusal is not None:
        return refusal
    if getattr(request, "api_auth", "") == "token":
        return error("a sign-in link signs a person in: ask with a staff session or a per-user API token, not "
                     "SUPERVISOR_API_TOKEN", 403, environment=None)
    data, bad = read_json(request) if request.body else ({}, None)
    if bad is not None:
        return bad
    if not isinstance(data, dict) or set(data) - {"environment"}:
        return malformed('the body must be a JSON object {"environment": name}, or empty')
    environments = application.environment_names()
    environment = data.get("environment")
    if environment is None and len(environments) == 1:
        environment = environments[0]
    if environment not in environments:
        return json_response({"errors": {"environment": [
            f"Give one of the environments {name} is on: {', '.join(environments) or 'none'}."]}}, status=400)
    url = request.build_absolute_uri(signin.link(request, name, environment))
    return json_response({"url": url, "app": name, "environment": environment,
                          "user": signin.mapped_username(request.user), "expires_in": settings.APP_SIGNIN_MAX_AGE})
