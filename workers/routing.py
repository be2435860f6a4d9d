"""Database routing for hosted applications.

While a request for a hosted application is served, ``current_database`` holds that application's connection
alias (set by workers.hosting.HostedApplicationMiddleware). Every model of a hosted Django app (auth,
contenttypes, sessions, admin, plus APP_HOSTED_APPS) then reads and writes that database; everything else, and
every query outside a hosted request, goes to this process's own database as usual.
"""

import contextlib
from contextvars import ContextVar

from django.conf import settings

# The connection alias of the hosted application whose request is being served, or None.
current_database = ContextVar("hosted_database", default=None)

_labels = {}


def hosted_labels():
    """The hosted app labels, computed once per APP_HOSTED_APPS value (the router asks on every query)."""
    key = tuple(settings.APP_HOSTED_APPS)
    labels = _labels.get(key)
    if labels is None:
        from .provisioning import hosted_labels as compute

        labels = _labels[key] = frozenset(compute())
    return labels


@contextlib.contextmanager
def using(alias):
    """Route the hosted models to ALIAS within the block (requests, shells, tests)."""
    token = current_database.set(alias)
    try:
        yield alias
    finally:
        current_database.reset(token)


class HostedDatabaseRouter:
    """Sends a hosted request's hosted models to its application's database; keeps hosted applications'
    databases to the hosted Django apps, and this process's own tables out of them."""

    def _route(self, model):
        alias = current_database.get()
        if alias is not None and model._meta.app_label in hosted_labels():
            return alias
        return None

    def db_for_read(self, model, **hints):
        return self._route(model)

    def db_for_write(self, model, **hints):
        return self._route(model)

    def allow_migrate(self, db, app_label, **hints):
        from .provisioning import hosted_labels, is_hosted_alias

        if is_hosted_alias(db):
            return app_label in hosted_labels()
        return None
