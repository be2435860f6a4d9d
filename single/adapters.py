"""Plugs a single instance's in-process adapters into the seams of both sides, and takes them out again (tests).

- APP_PROCESS_ADAPTER=local: lifecycle steps run in this process (apps.lifecycle.runner = single.runner.LocalRunner);
- APP_DISCOVERY_ADAPTER=local: the hosting of applications reads this process's own database
  (exchange.directory.hosted_source = single.directory.LocalDirectory).
"""

from apps import lifecycle
from exchange import directory

from .directory import LocalDirectory
from .runner import LocalRunner


def install():
    """Put the local adapters in place; returns what they replaced, for ``restore``."""
    replaced = (lifecycle.runner, directory.hosted_source)
    lifecycle.runner = LocalRunner()
    directory.hosted_source = LocalDirectory()
    return replaced


def restore(replaced):
    lifecycle.runner, directory.hosted_source = replaced
