"""Runtime status of applications per environment, as workers report it.

Workers write each transition to one Redis hash (contract.STATUSES_KEY); the supervisor mirrors it onto its
Placement rows (apps.mirror).

Each entry carries ``seq`` (exchange.sequence): readers take no entry older than one they have seen, so an old signed
entry copied back (a replay) changes nothing; and the writer remembers the bytes it wrote (``written``), so that the
agent can write its own back at once where Redis holds anything else.
"""

import math
import time

from . import events, sequence, signing
from .contract import RUNTIME_STATES, STATUSES_KEY, status_field

# status_field -> (the sealed entry this process last wrote there, that entry). Only workers write statuses; the
# agent compares what Redis holds with it (workers.agent.Agent.republish_if_changed).
_written = {}


def write(redis, app, environment, state, error="", traceback="", now=None):
    """Record a transition and announce it (exchange.events), so that every process drops its cached view at once.
    NOW: the time of the transition (a republished state keeps its own); the entry's ``seq`` is always new."""
    entry = {"app": app, "environment": environment, "state": state, "error": error, "traceback": traceback,
             "at": now if now is not None else time.time(), sequence.KEY: sequence.new()}
    return put(redis, entry, signing.dumps(entry, signer=environment))


def put(redis, entry, raw):
    """Store the sealed ENTRY (RAW) and announce it; remembered as what this process wrote."""
    field = status_field(entry["app"], entry["environment"])
    pipe = redis.pipeline(transaction=False)
    pipe.hset(STATUSES_KEY, field, raw)
    events.publish(pipe, events.PLACEMENT, app=entry["app"], environment=entry["environment"], state=entry["state"],
                   error=entry["error"] or None, at=entry["at"])
    pipe.execute()
    _written[field] = (raw, entry)
    return entry


def adopt(raw, app, environment, held):
    """Take RAW, the entry in Redis, as what this process wrote when it says what HELD does ((state, error, at):
    written by this writer's previous process). Returns whether it did."""
    entry = decode(raw, app, environment)
    if entry is None or (entry["state"], entry.get("error") or "", entry["at"]) != held:
        return False
    _written[status_field(app, environment)] = (raw, entry)
    return True


def disown(field):
    """Forget what this process wrote to FIELD (its application is no longer hosted here)."""
    _written.pop(field, None)


def written_fields():
    """The fields this process wrote to."""
    return list(_written)


def written(fields):
    """{field: (raw, entry)} of what this process last wrote to those of FIELDS it wrote."""
    return {field: _written[field] for field in fields if field in _written}


def read(redis, app, environment):
    return decode(redis.hget(STATUSES_KEY, status_field(app, environment)), app, environment)


def forget(redis, app, environments):
    if environments:
        fields = [status_field(app, env) for env in environments]
        redis.hdel(STATUSES_KEY, *fields)
        for field in fields:
            _written.pop(field, None)


def fetch(redis, fields):
    """The reported entries for FIELDS (``status_field`` names) in one HMGET: None where none or malformed."""
    if not fields:
        return []
    return [decode(raw, *field.split("/", 1)) for field, raw in zip(fields, redis.hmget(STATUSES_KEY, fields))]


def decode(raw, app, environment):
    """A status entry, or None when RAW is missing, not signed by ENVIRONMENT (with a key enrolled for it),
    malformed, or for another application or environment (an entry copied to another field)."""
    entry = signing.loads_or_none(raw, environment)
    if not isinstance(entry, dict) or entry.get("state") not in RUNTIME_STATES:
        return None
    if entry.get("app") != app or entry.get("environment") != environment:
        return None
    at = entry.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or not 0 <= at < 1e11:
        return None
    if not all(isinstance(entry.get(key) or "", str) for key in ("error", "traceback")):
        return None
    if not sequence.valid(entry.get(sequence.KEY)):
        return None
    return entry


def seq_of(entry):
    """ENTRY's sequence (exchange.sequence); an entry written before there was one is ordered by its time."""
    return sequence.of(entry, "at")
