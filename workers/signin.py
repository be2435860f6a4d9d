"""Signing an operator into a hosted application's admin with a one-time link from the supervisor (apps.signin).

The link carries a token the supervisor signed (exchange.signing) naming the application, the environment, the
operator, whether they are a superuser, a random nonce and an expiry (APP_SIGNIN_MAX_AGE, at most 60 s). This
worker signs the visitor in only when the token verifies, is for this very application on this very environment,
has not expired, and its nonce was never burnt: the nonce is set in Redis with SET NX first, so a second use of the
same link (or a copy racing it) finds it taken and is refused.

The operator becomes ``operator-<username>`` in the application's own user table, created on first use, staff,
superuser exactly when the operator is one at the supervisor (set again at each sign-in, so a demotion there
carries over), with no usable password: this link is its only way in. The sign-in is recorded in the
application's admin history (LogEntry, on that user) and the worker's log.
"""

import base64
import binascii
import logging
import time

import redis
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model, login
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import never_cache

from exchange import contract, signing
from exchange.redis_client import supervisor_redis

log = logging.getLogger("appsup.worker")

USER_PREFIX = contract.SIGNIN_USER_PREFIX
# Expiry the supervisor may set beyond the worker's clock: the link's life, plus a little clock skew.
CLOCK_SKEW = 5


def decode(text):
    """The token's claims (a dict) when TEXT is a token the supervisor signed, else None."""
    try:
        sealed = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    claims = signing.loads_or_none(sealed, signing.SUPERVISOR)  # an environment's key signs no one in
    return claims if isinstance(claims, dict) else None


def refusal(claims, app, environment, now):
    """Why CLAIMS do not sign anyone into APP on ENVIRONMENT at NOW (a sentence), or None."""
    if claims is None or claims.get("purpose") != contract.SIGNIN_PURPOSE:
        return "this link was not issued by the supervisor"
    if claims.get("app") != app or claims.get("environment") != environment:
        return "this link is for another application or environment"
    expires = claims.get("expires")
    if not isinstance(expires, (int, float)) or expires < now:
        return "this link has expired"
    if expires > now + settings.APP_SIGNIN_MAX_AGE + CLOCK_SKEW:
        return "this link claims to be valid for longer than a sign-in link may be"
    operator, nonce = claims.get("operator"), claims.get("nonce")
    if not isinstance(operator, str) or not operator or not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
        return "this link is malformed"
    return None


def burn(nonce):
    """True the first time NONCE is burnt; False when it was already (the link was used)."""
    ttl = settings.APP_SIGNIN_MAX_AGE + 2 * CLOCK_SKEW
    return bool(supervisor_redis().set(contract.signin_nonce_key(nonce), b"1", nx=True, ex=ttl))


def mapped_user(operator, superuser):
    User = get_user_model()
    username = (USER_PREFIX + operator)[:150]
    user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True})
    if created:
        user.set_unusable_password()
    user.is_staff, user.is_active, user.is_superuser = True, True, bool(superuser)
    user.save()
    return user


def _refused(reason):
    response = HttpResponse(f"Sign-in refused: {reason}. Ask the supervisor for a new link (Open as operator).\n",
                            status=403, content_type="text/plain; charset=utf-8")
    response["Referrer-Policy"] = "no-referrer"
    return response


@never_cache
def operator_signin(request):
    view = request.hosted_app
    claims = decode(request.GET.get("t", ""))
    reason = refusal(claims, view.name, settings.ENVIRONMENT_NAME, time.time())
    if reason is None:
        try:
            if not burn(claims["nonce"]):
                reason = "this link was used already"
        except redis.RedisError as exc:
            log.warning("sign-in into %s refused: cannot burn its nonce (%s)", view.name, exc)
            reason = "the worker cannot check that this link is unused right now (Redis is unreachable)"
    if reason is not None:
        log.warning("sign-in into %s refused: %s", view.name, reason)
        return _refused(reason)
    user = mapped_user(claims["operator"], claims.get("superuser"))
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    LogEntry.objects.log_actions(
        user.pk, [user], CHANGE, change_message=f"Signed in from the supervisor by operator {claims['operator']} "
        f"(environment {settings.ENVIRONMENT_NAME})", single_object=True)
    log.info("operator %s signed into %s's admin as %s", claims["operator"], view.name, user.get_username())
    response = HttpResponseRedirect(reverse("admin:index"))
    response["Referrer-Policy"] = "no-referrer"
    return response
