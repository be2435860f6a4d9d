"""One-time links that sign an operator into a hosted application's admin ("Open as operator").

The supervisor signs a token (exchange.signing) naming the application, the environment, the operator, whether
they are a superuser, a random nonce and an expiry APP_SIGNIN_MAX_AGE seconds ahead (60 at most); the worker
hosting the application there verifies it and burns the nonce (workers/signin.py). The link is the application's
own origin with APP_APPS_DOMAIN, else /apps/<name>/ on the supervisor; either way it names the environment
(?_env=) so that the proxy takes it where the token is valid.

Who may ask: a staff user with the ``apps.operate_application`` permission (superusers have it). What they get in
the application: ``operator-<username>``, a superuser there exactly when they are one here, otherwise a staff user
with no permissions of the application's own (its administrators grant them in its admin).
"""

import base64
import logging
import secrets
import time
from urllib.parse import urlencode

from django.conf import settings

from exchange import contract, signing
from proxy import hosts, targets

log = logging.getLogger("appsup.signin")

PERMISSION = "apps.operate_application"
SIGNIN_PATH = "_appsup/signin/"  # workers.hosted_urls.SIGNIN_PATH, below the application's mount point


def mapped_username(user):
    """Who USER becomes in the application (workers.signin.mapped_user)."""
    return (contract.SIGNIN_USER_PREFIX + user.get_username())[:150]


def may_sign_in(user):
    return user.is_active and user.is_staff and user.has_perm(PERMISSION)


def token(application_name, environment_name, user, now=None):
    now = time.time() if now is None else now
    claims = {
        "purpose": contract.SIGNIN_PURPOSE,
        "app": application_name,
        "environment": environment_name,
        "operator": user.get_username(),
        "superuser": bool(user.is_superuser),
        "nonce": secrets.token_urlsafe(24),
        "expires": int(now) + settings.APP_SIGNIN_MAX_AGE,
    }
    return base64.urlsafe_b64encode(signing.dumps(claims)).decode("ascii").rstrip("=")


def link(request, application_name, environment_name, now=None):
    """The one-time link for REQUEST's user into APPLICATION_NAME's admin on ENVIRONMENT_NAME. The request
    that asks for it is audited as the admin's and the API's requests are (application.signin_link)."""
    query = urlencode({"t": token(application_name, environment_name, request.user, now), targets.ENV_PARAM:
                       environment_name})
    origin = hosts.app_origin(application_name, request.scheme, request.get_port())
    base = f"{origin}/" if origin else f"{targets.PREFIX}/{application_name}/"
    return f"{base}{SIGNIN_PATH}?{query}"
