"""A single instance's one environment (config.SINGLE_ENVIRONMENT, "local"): a row like a worker's, so that pages,
the API and placements treat it as any other; it is online while the process serves
(environments.models.single_environment), never by heartbeat."""

import os
import socket

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from environments.models import Environment
from exchange import contract


def ensure():
    """Create or update the local environment's row, as a worker's registration would: at start, never on a read."""
    environment, _ = Environment.objects.update_or_create(
        name=settings.ENVIRONMENT_NAME,
        defaults={"version": contract.VERSION, "host": socket.gethostname(), "pid": os.getpid(),
                  "last_heartbeat_at": timezone.now(), "stopped_at": None, "rejected": "", "web_ok": None,
                  "problem": ""},
    )
    return environment


def after_migrate(sender, using=DEFAULT_DB_ALIAS, **kwargs):
    """post_migrate of this process's own database (hosted applications' databases are migrated too, and have no
    environments table)."""
    if using == DEFAULT_DB_ALIAS and sender.name == "environments":  # once per migrate, with its table there
        ensure()
