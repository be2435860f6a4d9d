"""``manage.py appcommand (--app NAME … | --all) [--timeout S] COMMAND [ARG …]``: run the Django management command
COMMAND inside one, several or every application, through their agents (fleet.appcommands).

Prints each application's output, per environment, as it comes, then a summary. Exit status 0 when it ran and
exited 0 everywhere; 1 when it failed anywhere (a non-zero exit, a refusal, an offline environment, no answer),
after running everywhere else; 2 on bad input (no or unknown application, a refused command or argument), with
nothing run.
"""

import argparse

import redis
from django.core.management.base import BaseCommand, CommandError

from apps.management.commands.startapp_sequential import seconds
from fleet import appcommands


class Command(BaseCommand):
    help = "Run a management command inside one or every application, through their agents."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--app", action="append", dest="apps", metavar="NAME",
                           help="an application to run it in (repeatable)")
        which.add_argument("--all", action="store_true", dest="every", help="run it in every application")
        parser.add_argument("--timeout", type=seconds, default=None,
                            help="seconds the whole run may take (default: APP_COMMAND_TIMEOUT)")
        parser.add_argument("command", help="the management command, e.g. check, clearsessions")
        parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments, passed as they are")

    def handle(self, *args, apps=None, every=False, timeout=None, command, **options):
        args = list(args)  # Django hands the REMAINDER named "args" over as positional arguments
        if not apps and not every:
            raise CommandError("say where: --app NAME (repeatable) or --all", returncode=2)
        try:
            appcommands.check(command, args)
            targets = appcommands.applications(None if every else list(dict.fromkeys(apps)))
        except appcommands.Refused as exc:
            raise CommandError(str(exc), returncode=2) from None
        if not targets:
            self.stdout.write("no application to run it in")
            return

        def show(result):
            if result.ok:
                head = self.style.SUCCESS(f"=== {result.app} on {result.environment}: exit 0")
            elif result.exit_status is None:
                head = self.style.ERROR(f"=== {result.app} on {result.environment}: FAILED: {result.error}")
            else:
                head = self.style.ERROR(f"=== {result.app} on {result.environment}: FAILED (exit "
                                        f"{result.exit_status})")
            self.stdout.write(head)
            if result.output:
                self.stdout.write(result.output.rstrip("\n"))
            if result.truncated:
                self.stdout.write(f"[… {result.truncated} more characters of output not kept]")
            self.stdout.flush()

        try:
            results = appcommands.run(targets, command, args, timeout=timeout, on_result=show)
        except redis.RedisError as exc:
            raise CommandError(f"Redis is unavailable ({exc}); nothing could be sent") from None
        failed = [r for r in results if not r.ok]
        self.stdout.write(f"{command}: {len(results) - len(failed)} succeeded, {len(failed)} failed")
        if failed:
            raise CommandError("failed in " + ", ".join(f"{r.app} on {r.environment}" for r in failed))
