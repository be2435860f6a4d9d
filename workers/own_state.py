"""A worker serves its applications by the states it holds itself, not by whatever Redis says of them.

Redis is where every process reads an application's state on its environment (``exchange.directory``), and anyone
who can write to Redis can copy an old signed status back: an application's ``running`` saved before a stop verifies
as well as the ``stopped`` that followed. Readers keep the newest sequence they have seen, and the agent writes its
own back within a second, but a process that has not read the newer one yet would take the replay until then.

The worker does not have to: its own database holds the state its agent last reported for each application
(``HostedState``, written before the status is published, see ``workers.commands._report``). Whichever of the two is
newer by its time is what this worker serves by; a replayed entry is older than the record, so a stopped application
stays stopped here whatever Redis holds, and the supervisor's proxy, which can only read Redis, gets this worker's
503. Where the record is missing (never started here, or the worker's database was replaced) Redis decides.

The record is read once for each view the directory reads (about once a second, and after each event), not per
request.
"""

import threading
from dataclasses import replace

from django.db import DatabaseError

from .models import HostedState

_lock = threading.Lock()
_memo = {}  # application -> (the directory's view, that view with this worker's own state)


def _record(app):
    try:
        held = HostedState.objects.filter(app=app).values("state", "error", "traceback", "at").first()
    except DatabaseError:  # this worker's database is away: Redis alone, as before there was a record
        return None
    return held


def overlaid(view, environment):
    """VIEW, with ENVIRONMENT's status replaced by this worker's own record where that is newer."""
    if view is None or environment not in view.environment_names:
        return view
    with _lock:
        memo = _memo.get(view.name)
    if memo is not None and memo[0] is view:
        return memo[1]
    held = _record(view.name)
    reported = view.statuses.get(environment)
    result = view
    if held is not None and (reported is None or held["at"] >= reported.get("at", 0)):
        own = dict(reported or {}, app=view.name, environment=environment, **held)
        if own != reported:
            result = replace(view, statuses={**view.statuses, environment: own})
    with _lock:
        _memo[view.name] = (view, result)
    return result
