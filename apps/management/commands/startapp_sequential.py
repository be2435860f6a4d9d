"""``manage.py startapp_sequential APP [--timeout S]``: start APP on each of its environments, one after the other.

A thin wrapper over apps.lifecycle.run (the same code as the admin's Start action and the API): one line per
environment as it completes, exit status 0 once every environment runs the application; otherwise a CommandError
(exit status 1) naming the environment and the reason.
"""

import argparse
import math

import redis
from django.conf import settings
from django.core.management.base import CommandError

from apps import lifecycle
from apps.models import Application
from audit import actions
from audit.commands import AuditedCommand
from exchange import contract


def seconds(value):
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0 or number > lifecycle.MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds above 0 and at most {lifecycle.MAX_TIMEOUT}"
        )
    return number


class Command(AuditedCommand):
    help = "Start APP on each of its environments in order, waiting for each before the next (docs/architecture.md)."
    audit_action = actions.APPLICATION_START

    def audit_target(self, options):
        return f"{actions.APPLICATION}:{options.get('app', '')}"

    def add_arguments(self, parser):
        parser.add_argument("app", help="name of the application to start")
        parser.add_argument(
            "--timeout",
            type=seconds,
            default=None,
            help="seconds the whole start may take (default: %s)" % settings.APP_COMMAND_TIMEOUT,
        )

    def handle(self, *args, app, timeout, **options):
        application = Application.objects.filter(name=app).first()
        if application is None:
            known = ", ".join(Application.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no application named {app!r} (known: {known})")
        if not application.placements.exists():
            raise CommandError(f"{app} is placed on no environment; nothing to start")

        def progress(step):
            line = step.line()
            self.stdout.write(line if step.ok else self.style.ERROR(line))
            self.stdout.flush()

        try:
            outcome = lifecycle.run(application, contract.START, timeout=timeout, progress=progress)
        except lifecycle.OperationInProgress as exc:
            raise CommandError(str(exc))
        except redis.RedisError as exc:
            raise CommandError(f"Redis is unavailable ({exc}); no command can be sent until it is back")
        failure = outcome.failure
        if outcome.waiting_for:
            self.stdout.write(self.style.WARNING(
                f"{app} stays desired running: the controller (runsupervisor) completes the start on "
                f"{', '.join(outcome.waiting_for)} once it is back online"))
        if failure is not None:
            raise CommandError(
                f"starting {app} failed on {failure.environment}: {failure.error or f'it ended {failure.state}'}"
            )
        self.stdout.write(self.style.SUCCESS(f"{app} is running on {', '.join(s.environment for s in outcome.steps)}"))
