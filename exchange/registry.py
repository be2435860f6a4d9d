"""The environment registry: workers write their registration and heartbeats to Redis; the supervisor mirrors them
(environments.mirror).

A registration is {name, url, proxy_url, version, host, pid, heartbeat_at, stopped_at} plus what the agent
observed: web_ok (false while its web process does not answer), problem (why, for people), refusal and refusal_at
(the last command it refused, and when), and ``seq`` (exchange.sequence): every write carries a higher one, so
that readers take no registration older than one they have seen (an old signed one copied back).

Redis holds one hash field per environment (contract.ENVIRONMENTS_KEY) with the whole registration as JSON, so a
heartbeat restores an entry that a Redis restart lost, and the supervisor reads every environment in one HGETALL.
"""

import json
import re
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import sequence, signing
from .contract import DEGRADED, ENVIRONMENTS_KEY, OFFLINE, ONLINE


def announce(redis, registration, now=None):
    """Register or heartbeat: write the full registration with a fresh heartbeat time and sequence. Returns the
    sealed value written (the agent compares Redis with it)."""
    entry = {key: value for key, value in registration.items() if key not in ("heartbeat_at", sequence.KEY)}
    # The sequence right after the heartbeat time: the two are what a heartbeat changes (heartbeat_change).
    entry.update(heartbeat_at=now if now is not None else time.time())
    entry[sequence.KEY] = sequence.new()
    entry["stopped_at"] = None
    raw = signing.dumps(entry, signer=registration["name"])
    redis.hset(ENVIRONMENTS_KEY, registration["name"], raw)
    return raw


def withdraw(redis, registration, now=None):
    """Graceful stop: keep the entry (so it shows), marked stopped, which makes it offline at once."""
    entry = decode(redis.hget(ENVIRONMENTS_KEY, registration["name"]), registration["name"]) or dict(
        registration, heartbeat_at=None)
    entry["stopped_at"] = now if now is not None else time.time()
    entry[sequence.KEY] = sequence.new()
    redis.hset(ENVIRONMENTS_KEY, registration["name"], signing.dumps(entry, signer=registration["name"]))


def forget(redis, names):
    """Drop registrations (an operator deleted those environments); a worker still running re-registers."""
    if names:
        redis.hdel(ENVIRONMENTS_KEY, *names)


def is_alive(entry, now=None):
    """Whether a registration's last heartbeat is within the timeout (see Environment.is_online)."""
    heartbeat = entry.get("heartbeat_at")
    now = time.time() if now is None else now
    return entry.get("stopped_at") is None and heartbeat is not None and now - heartbeat < settings.APP_HEARTBEAT_TIMEOUT


def status_of(entry, now=None):
    """ONLINE, DEGRADED (the agent heartbeats, its web process does not answer it) or OFFLINE."""
    if entry is None or not is_alive(entry, now):
        return OFFLINE
    return DEGRADED if entry.get("web_ok") is False else ONLINE


def _time_or_none(value):
    """None, or epoch seconds that a datetime can hold."""
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e11


def _pid_or_none(value):
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31)


def decode(raw, name=None):
    """A registration, or None when RAW is missing, not signed by the environment it names (with a key enrolled for
    it), malformed (wrongly typed fields included), or (NAME given) another environment's."""
    if raw is None:
        return None
    try:
        signer, body = signing.open_sealed(raw, name)
        entry = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError, ImproperlyConfigured):
        return None
    if not isinstance(entry, dict) or entry.get("name") != signer:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"]:
        return None
    times = ("heartbeat_at", "stopped_at", "refusal_at")
    if not all(_time_or_none(entry.get(key)) for key in times) or not _pid_or_none(entry.get("pid")):
        return None
    if not all(isinstance(entry.get(key, ""), str)
               for key in ("proxy_url", "version", "host", "problem", "refusal", "public_key")):
        return None
    if entry.get("web_ok") not in (None, True, False) or not sequence.valid(entry.get(sequence.KEY)):
        return None
    return entry


def seq_of(entry):
    """ENTRY's sequence (exchange.sequence); a registration written before there was one is ordered by its latest
    heartbeat or stop."""
    return sequence.of(entry, "heartbeat_at", "stopped_at")


# What a heartbeat changes in a registration: the value announce() writes as "heartbeat_at":<number>, and the
# "seq":<integer> it writes right after it (absent from registrations written before there was one). Quotes inside
# JSON strings are escaped, so in what announce() writes this is the key itself; and only the bytes of entries that
# verified (signed by the environment they name) are ever compared with it.
_HEARTBEAT = re.compile(rb'"heartbeat_at":(null|[0-9][0-9.eE+-]*)(?:,"seq":([0-9]{1,19}))?(?=[,}])')


def heartbeat_parts(raw):
    """(its signer and the body before its heartbeat time, the body after it and its sequence) of RAW, a
    registration that ``decode`` took; None when there is no heartbeat time to find."""
    signer, body = signing.signer_of(raw), signing.body_of(raw)
    found = _HEARTBEAT.search(body)
    return None if found is None else ((signer, body[:found.start(1)]), body[found.end():])


def heartbeat_change(raw, parts):
    """(RAW's heartbeat_parts, its heartbeat time, its sequence) when RAW verifies and differs from the
    registration PARTS came from in its heartbeat time and sequence only: what a heartbeat does, and all the mirror
    then needs to know, without decoding it again. None otherwise (``decode`` it)."""
    try:
        signer, body = signing.open_sealed(raw, parts[0][0])
    except (signing.BadSignature, ImproperlyConfigured):
        return None
    found = _HEARTBEAT.search(body)
    if found is None or (signer, body[:found.start(1)]) != parts[0] or body[found.end():] != parts[1]:
        return None
    if found.group(1) == b"null":
        at = None
    else:
        try:
            at = float(found.group(1))
        except ValueError:
            return None
        if not _time_or_none(at):
            return None
    seq = None if found.group(2) is None else int(found.group(2))
    if not sequence.valid(seq):
        return None
    return parts, at, seq_of({"heartbeat_at": at, sequence.KEY: seq, "stopped_at": None})


def read(redis):
    """Every registration in Redis, by environment name; unsigned and malformed entries are skipped."""
    return read_all(redis)[0]


def read_all(redis):
    """(verified registrations by environment name, {name: why rejected} for the entries that are not)."""
    entries, rejected = {}, {}
    for raw_name, raw in redis.hgetall(ENVIRONMENTS_KEY).items():
        name = raw_name.decode(errors="replace")
        entry = decode(raw, name)
        if entry is not None:
            entries[name] = entry
        else:
            rejected[name] = rejection(raw, name)
    return entries, rejected


def rejection(raw, name=None):
    """Why a registry entry (NAME's) is not taken (for the operator)."""
    try:
        signer, _ = signing.open_sealed(raw, name)
    except signing.BadSignature as exc:
        return f"its registration in Redis does not verify: {exc}"
    except ImproperlyConfigured as exc:
        return f"no registration can be verified here: {exc}"
    entry = signing.loads_or_none(raw, signer)
    if isinstance(entry, dict) and entry.get("name") != signer:
        return f"its registration in Redis is signed by {signer!r} but names {entry.get('name')!r}"
    return "its registration in Redis is malformed"


def unenrolled(raw, name):
    """The public key NAME's registration RAW offers when it is signed with that very key and NAME has none
    enrolled here (what trust on first use may record), else None."""
    from . import keys

    try:
        signing.open_sealed(raw, name)
        return None  # verifies already: enrolled
    except (signing.BadSignature, ImproperlyConfigured):
        pass
    try:
        body = signing.body_of(raw)
        entry = json.loads(body)
        offered = entry.get("public_key") if isinstance(entry, dict) and entry.get("name") == name else None
        if not isinstance(offered, str) or signing.signer_of(raw) != name:
            return None
        key = keys.public_key(offered)
        _, kid, signature, _ = signing._split(raw)
        if kid != keys.key_id(key) or not keys.verify(key, signature, body):
            return None
    except (ValueError, UnicodeDecodeError, RecursionError, signing.BadSignature):
        return None
    return offered
