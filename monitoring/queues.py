"""django-rq's dashboard over the command queues: one queue per environment, named when the environment registers.

django-rq lists the queues of ``settings.RQ_QUEUES``, which it reads again on every call
(``django_rq.settings.get_queues_list``). Environments come and go at run time, so RQ_QUEUES is a mapping computed
from the supervisor's Environment table whenever django-rq looks, with the command channel's Redis and the signed
JSON serializer, so that the dashboard's job pages can read what is queued. The settings module imports this one:
nothing here may import django-rq or the models at import time.
"""

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.conf import settings

from exchange import contract, redis_client

SERIALIZER = "exchange.signing.SignedJSONSerializer"


def connection_url():
    """The command channel's Redis URL, with the socket timeouts the rest of the supervisor uses: django-rq builds its
    connections from the URL alone, and without them a hung Redis would hang the dashboard's page for good."""
    parts = urlsplit(redis_client.resolve_url(settings.APP_COMMAND_REDIS_URL))
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(redis_client.SOCKET_TIMEOUT))
    query.setdefault("socket_connect_timeout", str(redis_client.CONNECT_TIMEOUT))
    # Not urlunsplit: it writes unix:///path (no host) as unix:/path, which redis-py reads as a TCP address.
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


class EnvironmentQueues(Mapping):
    """``settings.RQ_QUEUES``: queue name -> django-rq's queue configuration, one per environment the supervisor
    knows (online or not: an offline environment's queue may still hold jobs). One query each time it is read."""

    def _queues(self):
        from environments.models import Environment

        config = {"URL": connection_url(), "SERIALIZER": SERIALIZER}
        names = Environment.objects.order_by("name").values_list("name", flat=True)
        return {contract.queue_name(name): dict(config) for name in names}

    def __getitem__(self, name):
        return self._queues()[name]

    def __iter__(self):
        return iter(self._queues())

    def __len__(self):
        return len(self._queues())

    def items(self):
        # Mapping's items() would read the table once per queue.
        return self._queues().items()

    def __repr__(self):
        return "EnvironmentQueues(one queue per environment, read from the Environment table)"
