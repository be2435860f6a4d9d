"""HMAC-SHA256 with APP_SHARED_SECRET over everything the supervisor and the workers exchange through Redis that
anyone acts on: commands, their results, registrations and heartbeats, reported states, the configuration cache.

Whoever can write to Redis but lacks the secret can then make nothing happen: what does not verify is skipped. The
signature covers the bytes as they are stored and is checked before anything parses them (as Celery's signing
serializer does), so a flaw in a decoder is never reachable by unsigned input.

A sealed value is ``appsup1:<hex HMAC>:<body>``.
"""

import hashlib
import hmac
import json

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = b"appsup1:"
_DIGEST_HEX = hashlib.sha256().digest_size * 2


class BadSignature(ValueError):
    pass


def _key():
    secret = settings.APP_SHARED_SECRET
    if not secret:
        raise ImproperlyConfigured("APP_SHARED_SECRET is not set: nothing can be signed or verified")
    return secret.encode()


# (the secret, an HMAC of nothing yet with its key): copying it skips hashing the key again for each value.
_keyed = (None, None)


def _mac(body):
    # Verifying 10,000 registrations is part of every controller pass after a burst of heartbeats: a copy of an
    # HMAC keyed once costs 70 % of the one-shot hmac.digest, which costs 60 % of hmac.new(…).hexdigest().
    global _keyed
    secret, keyed = _keyed
    if secret is None or secret != settings.APP_SHARED_SECRET:
        secret = settings.APP_SHARED_SECRET
        keyed = hmac.new(_key(), digestmod=hashlib.sha256)
        _keyed = (secret, keyed)
    mac = keyed.copy()
    mac.update(body)
    return mac.hexdigest().encode()


def seal(body, secret=None):
    """BODY (bytes) with its signature: with this deployment's APP_SHARED_SECRET, or SECRET (a drill writing what a
    holder of the secret could have written, outside any deployment's settings)."""
    if secret is not None:
        return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode() + b":" + body
    return PREFIX + _mac(body) + b":" + body


def unseal(sealed):
    """The body of SEALED once its signature verifies; BadSignature otherwise."""
    if isinstance(sealed, str):
        sealed = sealed.encode()
    if not isinstance(sealed, bytes) or not sealed.startswith(PREFIX):
        raise BadSignature("not signed")
    mac, body = sealed[len(PREFIX):len(PREFIX) + _DIGEST_HEX], sealed[len(PREFIX) + _DIGEST_HEX + 1:]
    if sealed[len(PREFIX) + _DIGEST_HEX:len(PREFIX) + _DIGEST_HEX + 1] != b":" or not hmac.compare_digest(mac, _mac(body)):
        raise BadSignature("the signature does not verify (not written with this deployment's APP_SHARED_SECRET)")
    return body


def body_of(sealed):
    """The body of SEALED (bytes) without checking it: only for a value that ``unseal`` verified already."""
    return sealed[len(PREFIX) + _DIGEST_HEX + 1:]


def dumps(obj):
    return seal(json.dumps(obj, separators=(",", ":")).encode())


def loads(sealed):
    """The JSON value SEALED carries; BadSignature when it does not verify, ValueError when it is not JSON."""
    return json.loads(unseal(sealed))


def loads_or_none(sealed):
    """The JSON value SEALED carries, or None when it is missing, does not verify, or is not JSON."""
    if sealed is None:
        return None
    try:
        return loads(sealed)
    except (ValueError, UnicodeDecodeError, RecursionError, ImproperlyConfigured):  # no secret: nothing verifies
        return None


class SignedJSONSerializer:
    """An RQ serializer: JSON, signed. Jobs, their metadata and their results are written with it and read only
    through it, so a job hash or result written without the secret never deserializes."""

    @staticmethod
    def dumps(obj):
        return dumps(obj)

    @staticmethod
    def loads(data):
        return loads(data)
