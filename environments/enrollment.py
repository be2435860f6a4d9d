"""Which public keys each environment signs with (exchange.keys): recorded on its row by the operator (``manage.py
enrollenvironment``, the admin), or, where APP_TRUST_ON_FIRST_USE is on, taken from the first registration of a
name nobody enrolled; published to Redis (signed by the supervisor) so that every process verifies without a
database query per entry.
"""

import logging

from django.conf import settings
from django.db import transaction

from exchange import keys, registry
from exchange.contract import ENVIRONMENT_KEYS_KEY, NAME_RE, NAME_RULE

from .models import Environment

log = logging.getLogger("appsup.enrollment")


class EnrollmentError(ValueError):
    pass


def enrolled():
    """{environment name: [public key texts]} of every environment with at least one key."""
    return {name: list(texts) for name, texts in
            Environment.objects.exclude(public_keys=[]).order_by("name").values_list("name", "public_keys") if texts}


def publish(redis):
    """Publish the enrolled keys to Redis as they are in the database. Returns whether anything changed there."""
    return keys.publish(redis, enrolled())


def enroll(name, public_key, keep_current=False):
    """Record PUBLIC_KEY as environment NAME's (creating its row if it has none yet). KEEP_CURRENT: also keep the
    key it has now (a rotation: both are valid until the old one is retired). Returns the keys now valid."""
    if not NAME_RE.match(name or ""):
        raise EnrollmentError(f"{name!r} is not an environment name: use {NAME_RULE}")
    if name == keys.SUPERVISOR:
        raise EnrollmentError(f"{keys.SUPERVISOR!r} names the supervisor's own key: choose another environment name")
    try:
        public_key = keys.valid_public_keys([public_key], "public key")[0]
    except keys.BadKey as exc:
        raise EnrollmentError(f"{exc} (`manage.py makekeypair` on the worker prints one)") from None
    with transaction.atomic():
        environment, _ = Environment.objects.select_for_update().get_or_create(name=name, defaults={"url": ""})
        current = [text for text in environment.public_keys if text != public_key] if keep_current else []
        if len(current) >= keys.MAX_KEYS:
            raise EnrollmentError(f"{name} has {len(current)} keys already: retire one first (at most "
                                  f"{keys.MAX_KEYS} are valid at once)")
        environment.public_keys = [*current, public_key]
        environment.save(update_fields=["public_keys"])
    return environment.public_keys


def retire(name, public_key):
    """Stop accepting PUBLIC_KEY for NAME (the end of a rotation). Returns the keys still valid."""
    with transaction.atomic():
        environment = Environment.objects.select_for_update().filter(name=name).first()
        if environment is None:
            raise EnrollmentError(f"no environment is named {name!r}")
        if public_key.strip() not in environment.public_keys:
            raise EnrollmentError(f"{name} has no such key enrolled")
        environment.public_keys = [text for text in environment.public_keys if text != public_key.strip()]
        environment.save(update_fields=["public_keys"])
    return environment.public_keys


def trust_first_use(redis, name, raw):
    """With APP_TRUST_ON_FIRST_USE on: record the key NAME's registration RAW is signed with, when it is signed with
    the key it offers and NAME has none enrolled. Returns the primary key of NAME's row when it did, else None."""
    if not settings.APP_TRUST_ON_FIRST_USE or name == keys.SUPERVISOR:
        return None
    offered = registry.unenrolled(raw, name)
    if offered is None:
        return None
    with transaction.atomic():
        environment = Environment.objects.select_for_update().filter(name=name).first()
        if environment is not None and environment.public_keys:
            return None  # enrolled: a registration with another key is refused, never trusted
        if environment is None:
            environment = Environment.objects.create(name=name, url="", public_keys=[offered])
        else:
            environment.public_keys = [offered]
            environment.save(update_fields=["public_keys"])
    log.warning("environment %s: trusted on first use, its key %s is now enrolled", name, keys.key_id(offered))
    publish(redis)
    return environment.pk


def ensure_published(redis, last):
    """Publish the enrolled keys when the database's differ from LAST (what was published before) or Redis lost
    them. Returns the keys now published."""
    wanted = enrolled()
    if wanted != last or (wanted and not redis.exists(ENVIRONMENT_KEYS_KEY)):
        publish(redis)
    return wanted
