"""Ed25519 signatures (exchange.keys) over everything the supervisor and the workers exchange through Redis that
anyone acts on: commands and the configuration (signed by the supervisor), registrations, heartbeats, statuses,
results and load reports (signed by the environment they are about).

Whoever can write to Redis but holds no key can then make nothing happen; whoever holds one environment's key can
speak for that environment only: a reader says whom it expects (``signer=``) and anything else is refused. The
signature covers the bytes as they are stored and is checked before anything parses them (as Celery's signing
serializer does), so a flaw in a decoder is never reachable by unverified input.

A sealed value is ``appsup2:<signer>:<key id>:<signature, URL-safe base64>:<body>``: the signer and key id say
which public key verifies it, so that two keys of one signer can be valid at once (a rotation).
"""

import base64
import binascii
import json

from django.core.exceptions import ImproperlyConfigured

from . import keys

PREFIX = b"appsup2:"
SUPERVISOR = keys.SUPERVISOR
_SIGNATURE_CHARS = 88  # 64 bytes in base64


class BadSignature(ValueError):
    pass


def _split(sealed):
    """(signer, key id, signature, body) of SEALED (bytes), unverified; BadSignature when it is not a sealed value."""
    if isinstance(sealed, str):
        sealed = sealed.encode()
    if not isinstance(sealed, bytes) or not sealed.startswith(PREFIX):
        raise BadSignature("not signed")
    parts = sealed[len(PREFIX):].split(b":", 3)
    if len(parts) != 4 or len(parts[2]) != _SIGNATURE_CHARS:
        raise BadSignature("not signed")
    signer, kid, signature, body = parts
    try:
        return signer.decode("ascii"), kid.decode("ascii"), base64.urlsafe_b64decode(signature), body
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise BadSignature("not signed") from None


def seal(body, signer=None, key=None):
    """BODY (bytes) signed as SIGNER (default: this process's own signer) with this process's key for it, or with
    KEY (a private key text: a drill writing what a holder of that key could have written, outside any
    deployment's settings)."""
    signer = keys.own_signer() if signer is None else signer
    if key is not None:
        private = keys.private_key(key)
        kid = keys.key_id(private)
    else:
        kid, private = keys.signing_key(signer)
    signature = base64.urlsafe_b64encode(private.sign(body))
    return PREFIX + signer.encode() + b":" + kid.encode() + b":" + signature + b":" + body


def _expected(signer):
    if signer is None:
        return None
    return (signer,) if isinstance(signer, str) else tuple(signer)


def open_sealed(sealed, signer=None):
    """(signer, body) of SEALED once its signature verifies with a valid key of its signer, and that signer is
    SIGNER (a name, or several; None: any signer this process knows); BadSignature otherwise."""
    name, kid, signature, body = _split(sealed)
    expected = _expected(signer)
    if expected is not None and name not in expected:
        raise BadSignature(f"signed by {name!r}, not by {' or '.join(map(repr, expected))}")
    key = keys.verifying_key(name, kid)
    if key is None:
        if name == SUPERVISOR:
            raise BadSignature(f"signed with supervisor key {kid}, which is not one of this deployment's "
                               f"(APP_SUPERVISOR_PUBLIC_KEYS)")
        raise BadSignature(f"signed with key {kid} of environment {name!r}, which is not enrolled here")
    if not keys.verify(key, signature, body):
        raise BadSignature(f"the signature of {name!r} (key {kid}) does not verify: the value was altered or forged")
    return name, body


def unseal(sealed, signer=None):
    """The body of SEALED once it verifies as written by SIGNER (see open_sealed); BadSignature otherwise."""
    return open_sealed(sealed, signer)[1]


def signer_of(sealed):
    """The signer SEALED names, unverified (for messages), or None when it is not a sealed value."""
    try:
        return _split(sealed)[0]
    except BadSignature:
        return None


def body_of(sealed):
    """The body of SEALED (bytes) without checking it: only for a value that ``unseal`` verified already."""
    return _split(sealed)[3]


def dumps(obj, signer=None, key=None):
    return seal(json.dumps(obj, separators=(",", ":")).encode(), signer=signer, key=key)


def loads(sealed, signer=None):
    """The JSON value SEALED carries; BadSignature when it does not verify as SIGNER's, ValueError when it is not
    JSON."""
    return json.loads(unseal(sealed, signer))


def loads_or_none(sealed, signer=None):
    """The JSON value SEALED carries, or None when it is missing, does not verify as SIGNER's, or is not JSON."""
    if sealed is None:
        return None
    try:
        return loads(sealed, signer)
    except (ValueError, UnicodeDecodeError, RecursionError, ImproperlyConfigured):
        return None


class SignedJSONSerializer:
    """An RQ serializer: JSON, signed as this process's own signer; loads accepts any signer this process knows
    (``expecting`` narrows it). Jobs, their metadata and their results are written with it and read only through
    it, so a job hash or result written without a key never deserializes."""

    signers = None
    signer = None  # None: this process's own (keys.own_signer)

    @classmethod
    def dumps(cls, obj):
        return dumps(obj, signer=cls.signer)

    @classmethod
    def loads(cls, data):
        return loads(data, cls.signers)

    @classmethod
    def expecting(cls, *signers):
        """A serializer whose loads accepts only what SIGNERS signed (a worker: jobs from the supervisor only)."""
        return type("SignedJSONSerializer", (cls,), {"signers": tuple(signers)})

    @classmethod
    def signing_as(cls, signer):
        """A serializer that signs as SIGNER (a worker's results: its environment's)."""
        return type("SignedJSONSerializer", (cls,), {"signer": signer})
