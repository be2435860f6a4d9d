"""An application's request log and errors, as its environments' worker web processes wrote them to Redis
(exchange.applog): the filters a reader (the API, the admin's Logs page) gives, and what is shown.

Only reads. An entry that does not verify or is malformed is skipped and counted (``skipped``), never shown.
"""

from datetime import datetime
from datetime import timezone as dt_timezone

from exchange import applog
from exchange.contract import ERRORS_KEEP, LOG_KEEP
from exchange.redis_client import supervisor_redis

DEFAULT_LIMIT = 100
TRUE, FALSE = "true", "false"


def filters_from(query):
    """(Filters, limit, {parameter: problem}) from a query dict (?status=5xx&errors=true&path=…&environment=…&limit=)."""
    problems = {}
    errors = query.get("errors", FALSE)
    if errors not in (TRUE, FALSE):
        problems["errors"] = "give true or false"
    filters = applog.Filters(status=query.get("status"), errors=errors == TRUE, path=query.get("path"),
                             environment=query.get("environment"))
    problems.update(filters.problems())
    raw = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= LOG_KEEP:
            limit = int(raw)
        else:
            problems["limit"] = f"give a whole number from 1 to {LOG_KEEP}"
    return filters, limit, problems


def read(name, filters, limit):
    """(entries, skipped) of application NAME, newest first; RedisError when Redis does not answer."""
    return applog.read(supervisor_redis(), name, filters, limit)


def iso(seconds):
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc).isoformat()


def entry_dict(record):
    """An entry as the API shows it: ``at`` in ISO 8601."""
    return {**record, "at": iso(record["at"])}


KEEP = {"requests": LOG_KEEP, "errors": ERRORS_KEEP}
