"""The cookies Django itself sets, by name.

Every role sets them at Path=/ under the same names, so they need care where roles meet: a worker renames those of
each hosted application (``sessionid_crm``, see workers.hosting), and the access proxy does not forward the
supervisor's own to a worker, which would otherwise receive an operator's supervisor session with every request.
"""

from django.conf import settings


def framework_cookie_names():
    return {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, settings.LANGUAGE_COOKIE_NAME, "messages"}
