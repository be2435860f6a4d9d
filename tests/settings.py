"""The test suite's settings: the supervisor role, stated rather than left to APP_MODE being unset (which means a
single instance, single/). Tests of the single instance switch to it themselves (tests/test_single_instance.py)."""

import os

from tests.processes import SHARED_SECRET, SUPERVISOR_KEY, signing_keys

_environ = dict(os.environ)
os.environ.setdefault("APP_MODE", "supervisor")
os.environ.setdefault("APP_SHARED_SECRET", SHARED_SECRET)
os.environ.setdefault("APP_SUPERVISOR_KEY", SUPERVISOR_KEY)
try:
    from supervisor_project.settings import *  # noqa: F403
finally:
    # Only this process's settings: the processes tests start get their configuration, settings module included,
    # the documented way (tests/processes.py base_env), not this module's defaults.
    os.environ.clear()
    os.environ.update(_environ)
    os.environ["DJANGO_SETTINGS_MODULE"] = "supervisor_project.settings"

# The test process writes what the supervisor and any worker would, each signed with its own key (tests/processes.py).
APP_SIGNING_KEYS = signing_keys()
