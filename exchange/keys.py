"""Who may sign what (docs/architecture.md, "Trust"): Ed25519 key pairs, one for the supervisor and one per
environment, and where a verifier finds the public keys.

- The **supervisor** signs what workers act on (commands, the configuration cache, its locks and summaries) with
  APP_SUPERVISOR_KEY. Workers hold only its public keys (APP_SUPERVISOR_PUBLIC_KEYS: two during a rotation).
- Each **environment** signs what it writes (registration and heartbeats, statuses, results, load reports) with
  its own APP_ENVIRONMENT_KEY. Its public keys are recorded by the operator in the supervisor's database
  (``manage.py enrollenvironment``, the admin), and the supervisor publishes them to Redis (ENVIRONMENT_KEYS_KEY),
  each entry signed with its own key, so that any process verifies without a database query per entry.

A key is written as the URL-safe base64 of its 32 raw bytes; its id is the first 16 hex digits of the SHA-256 of the
public key's raw bytes (what a sealed value names, so that several keys of one signer can be valid at once).

The signers of this process (settings.APP_SIGNING_KEYS, signer name -> private key text) are also trusted for
verification: a worker always verifies what it wrote itself, even before (or without) the published keys.
"""

import base64
import binascii
import hashlib
import threading
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .contract import ENVIRONMENT_KEYS_KEY

# The signer name of the supervisor in a sealed value; not a valid environment name's meaning (an entry naming it
# is checked against the supervisor's keys only).
SUPERVISOR = "supervisor"
# At most this many keys per signer are valid at once: the current one and the one being rotated out.
MAX_KEYS = 2
# How long a process uses the published environment keys before reading them again; a key id it does not know
# makes it read them again at once, at most once per REFRESH_MIN seconds (forged entries naming random key ids
# cost one HGETALL a second, not one per entry).
REFRESH = 5.0
REFRESH_MIN = 1.0

_RAW = serialization.Encoding.Raw


class BadKey(ValueError):
    """A key that is not a URL-safe base64 Ed25519 key."""


def _text(raw):
    return base64.urlsafe_b64encode(raw).decode()


def _raw(text, what):
    if not isinstance(text, str):
        raise BadKey(f"{what} is not text")
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode() + b"=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise BadKey(f"{what} is not an Ed25519 key (not URL-safe base64)") from None
    if len(raw) != 32:
        raise BadKey(f"{what} is not an Ed25519 key (32 bytes in URL-safe base64, as `manage.py makekeypair` "
                        f"prints)")
    return raw


def private_key(text, what="the private key"):
    return Ed25519PrivateKey.from_private_bytes(_raw(text, what))


def public_key(text, what="the public key"):
    return Ed25519PublicKey.from_public_bytes(_raw(text, what))


def public_text(key):
    """The public key text of KEY (a private or public key)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return _text(key.public_bytes(_RAW, serialization.PublicFormat.Raw))


def key_id(key):
    """The id of KEY (a private or public key, or a public key's text)."""
    if isinstance(key, str):
        key = public_key(key)
    elif isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return hashlib.sha256(key.public_bytes(_RAW, serialization.PublicFormat.Raw)).hexdigest()[:16]


def generate():
    """(private key text, public key text) of a new key pair."""
    key = Ed25519PrivateKey.generate()
    return _text(key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())), \
        public_text(key)


def valid_public_keys(texts, what="public key"):
    """TEXTS (a list of public key texts) checked: at most MAX_KEYS, each a key, no repeats. Raises BadKey."""
    if not isinstance(texts, (list, tuple)) or not all(isinstance(text, str) for text in texts):
        raise BadKey("public keys must be a list of texts")
    if len(texts) > MAX_KEYS:
        raise BadKey(f"at most {MAX_KEYS} {what}s are valid at once (the current one and the one rotated out)")
    keys = [text.strip() for text in texts]
    for text in keys:
        public_key(text, what)
    if len(set(keys)) != len(keys):
        raise BadKey(f"the same {what} is given twice")
    return keys


# The parsed keys of the texts seen, so that a key text is decoded once per process.
_parsed = {}


def _private(text):
    key = _parsed.get(("private", text))
    if key is None:
        key = _parsed[("private", text)] = private_key(text)
    return key


def _public(text):
    key = _parsed.get(("public", text))
    if key is None:
        key = _parsed[("public", text)] = public_key(text)
    return key


def signing_key(signer):
    """(key id, private key) this process signs as SIGNER with; ImproperlyConfigured when it holds none."""
    own = getattr(settings, "APP_SIGNING_KEYS", None) or {}
    try:
        text = own[signer]
    except KeyError:
        text = None
    if not text:
        if signer == SUPERVISOR:
            raise ImproperlyConfigured("APP_SUPERVISOR_KEY is not set here: this process cannot sign as the supervisor")
        raise ImproperlyConfigured(f"this process holds no key of environment {signer!r} (APP_ENVIRONMENT_KEY with "
                                   f"ENVIRONMENT_NAME={signer}): it cannot sign as that environment")
    key = _private(text)
    return key_id(key), key


def own_signer():
    """The signer this process writes as by default: the supervisor, or its environment (settings.APP_SIGNER)."""
    signer = getattr(settings, "APP_SIGNER", "")
    if not signer:
        raise ImproperlyConfigured("this process has no signing key (APP_SUPERVISOR_KEY or APP_ENVIRONMENT_KEY)")
    return signer


def _own_public(signer):
    """{key id: public key} of SIGNER's keys held by this process."""
    own = getattr(settings, "APP_SIGNING_KEYS", None) or {}
    try:
        text = own[signer]
    except KeyError:
        return {}
    if not text:
        return {}
    key = _private(text).public_key()
    return {key_id(key): key}


def supervisor_keys():
    """{key id: public key} of the supervisor's valid keys."""
    found = _own_public(SUPERVISOR)
    for text in getattr(settings, "APP_SUPERVISOR_PUBLIC_KEYS", ()) or ():
        key = _public(text)
        found[key_id(key)] = key
    return found


class Published:
    """The environment keys the supervisor published to Redis, as this process last read them: one HGETALL every
    REFRESH seconds, or sooner (at most every REFRESH_MIN) when a value names a key id not known yet (a rotation)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.raw = {}  # environment -> the published bytes last verified
        self.keys = {}  # environment -> {key id: public key}
        self.read_at = None

    def reset(self):
        with self.lock:
            self.raw, self.keys, self.read_at = {}, {}, None

    def lookup(self, environment, kid, clock=time.monotonic):
        now = clock()
        keys = self.keys.get(environment, {})
        stale = self.read_at is None or now - self.read_at > REFRESH
        unknown = kid not in keys and (self.read_at is None or now - self.read_at > REFRESH_MIN)
        if stale or unknown:
            self.refresh(now)
            keys = self.keys.get(environment, {})
        return keys.get(kid)

    def refresh(self, now):
        from .redis_client import supervisor_redis

        with self.lock:
            self.read_at = now
            try:
                entries = supervisor_redis().hgetall(ENVIRONMENT_KEYS_KEY)
            except Exception:  # noqa: BLE001 - Redis lost or no Redis here: keep what was known
                return
            raw, keys = {}, {}
            for name, value in entries.items():
                name = name.decode(errors="replace")
                if self.raw.get(name) == value:
                    raw[name], keys[name] = value, self.keys[name]
                    continue
                texts = decode_published(value, name)
                if texts is None:
                    continue
                raw[name] = value
                keys[name] = {key_id(_public(text)): _public(text) for text in texts}
            self.raw, self.keys = raw, keys


published = Published()


def decode_published(value, name):
    """The public key texts of environment NAME that VALUE (its field of ENVIRONMENT_KEYS_KEY) carries when it is
    the supervisor's; None otherwise."""
    from . import signing

    entry = signing.loads_or_none(value, signer=SUPERVISOR)
    if not isinstance(entry, dict) or entry.get("environment") != name:
        return None
    try:
        return valid_public_keys(entry.get("keys"))
    except BadKey:
        return None


def publish(redis, keys_by_environment):
    """Write KEYS_BY_ENVIRONMENT ({name: [public key texts]}) as the published environment keys, replacing what
    was there, signed by the supervisor. Returns whether anything changed."""
    from . import signing

    wanted = {name: sorted(texts) for name, texts in keys_by_environment.items() if texts}
    current = {}
    for name, value in redis.hgetall(ENVIRONMENT_KEYS_KEY).items():
        current[name.decode(errors="replace")] = decode_published(value, name.decode(errors="replace"))
    if {name: sorted(texts or []) for name, texts in current.items()} == wanted:
        return False
    pipe = redis.pipeline()
    pipe.delete(ENVIRONMENT_KEYS_KEY)
    if wanted:
        pipe.hset(ENVIRONMENT_KEYS_KEY, mapping={
            name: signing.dumps({"environment": name, "keys": texts}, signer=SUPERVISOR)
            for name, texts in wanted.items()})
    pipe.execute()
    published.reset()
    return True


def verifying_key(signer, kid):
    """The public key SIGNER's key id KID names, or None when that signer has no such valid key here."""
    if signer == SUPERVISOR:
        return supervisor_keys().get(kid)
    own = _own_public(signer).get(kid)
    if own is not None:
        return own
    return published.lookup(signer, kid)


def verify(key, signature, body):
    try:
        key.verify(signature, body)
        return True
    except InvalidSignature:
        return False



def main():
    """``python -m exchange.keys``: a new key pair, without any deployment's settings (a worker that has no key
    yet cannot start Django)."""
    private, public = generate()
    print(f"private key (APP_ENVIRONMENT_KEY on the worker, or APP_SUPERVISOR_KEY on the supervisor): {private}")
    print(f"public key  (enroll it: manage.py enrollenvironment NAME --public-key=KEY; or APP_SUPERVISOR_PUBLIC_KEYS "
          f"on the workers): {public}")
    print(f"key id: {key_id(public)}")


if __name__ == "__main__":
    main()
