"""What a worker does to a database it has just loaded from another application's backup (apps.backups' clones):
it becomes the new application's own. Its admin account is the one the new application was created with (made, or
its password and rights reset when the source had an account of that name), and it keeps none of the source's
sessions, so nobody signed in to the source is signed in to the clone."""

import logging

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from . import provisioning

log = logging.getLogger("appsup.worker")


def make_own(app, payload):
    """Give APP's database (just loaded) the admin account PAYLOAD names and no sessions."""
    alias = provisioning.connect(app)
    Session.objects.using(alias).all().delete()
    username, password_hash = payload.get("admin_username"), payload.get("admin_password_hash")
    if username and password_hash:
        get_user_model().objects.db_manager(alias).update_or_create(
            username=username,
            defaults={"password": password_hash, "is_staff": True, "is_superuser": True, "is_active": True})
    log.info("%s: loaded from another application's backup, made its own (admin %s, no sessions)", app, username)
