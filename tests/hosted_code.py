"""The operator's own code in a worker of this test process, as a worker started with APP_HOSTED_APPS and
APP_HOSTED_URLCONF has it: the apps installed (their admin registered), and the hosted site rebuilt around them.

A worker builds its hosted admin and URLconf once, at start (workers/hosted_admin.py, workers/hosted_urls.py); a
test changes the settings afterwards, so it builds them again, on the way in and on the way out. Not nested.
"""

import contextlib
import importlib
import sys

from django.conf import settings
from django.contrib import admin
from django.test import override_settings
from django.urls import clear_url_caches

from workers import hosted_admin, hosted_urls

NOTES_APP = "samples.notes"
NOTES_URLCONF = "samples.notes.urls"


def _rebuild_hosted_site():
    importlib.reload(hosted_admin)
    importlib.reload(hosted_urls)
    clear_url_caches()


@contextlib.contextmanager
def hosting(apps=(NOTES_APP,), urlconf=NOTES_URLCONF):
    registered = set(admin.site._registry)
    # The admin's autodiscovery imports an app's admin module once per process: the second time round, it must be
    # run again to register the app's models.
    imported = [sys.modules[f"{app}.admin"] for app in apps if f"{app}.admin" in sys.modules]
    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, *apps], APP_HOSTED_APPS=list(apps),
                           APP_HOSTED_URLCONF=urlconf):
        try:
            for module in imported:
                importlib.reload(module)
            _rebuild_hosted_site()
            yield
        finally:
            # Installing the apps ran the admin's autodiscovery, which registered their models on the default site;
            # once they are uninstalled, the supervisor's admin must not list them.
            for model in set(admin.site._registry) - registered:
                admin.site.unregister(model)
    _rebuild_hosted_site()
