"""``manage.py upgradeapps (--app NAME … | --all) [--timeout S]``: migrate the applications whose environments
report pending migrations (fleet.upgrades), and wait, printing each step as it ends.

The upgrade is recorded and advanced the way the controller advances it (this command takes part, so it also
works while no controller runs; claims keep the two from sending a step twice). Exit status 0 when every
application migrated (or none needed it), 1 when any failed or the wait timed out, 2 on bad input.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from apps.management.commands.startapp_sequential import seconds
from fleet import upgrades
from fleet.models import DONE, FAILED, RUNNING, Upgrade

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Migrate the applications that need it (pending migrations), in the background, and wait."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--app", action="append", dest="apps", metavar="NAME",
                           help="an application to upgrade (repeatable)")
        which.add_argument("--all", action="store_true", dest="every", help="every application that needs it")
        parser.add_argument("--timeout", type=seconds, default=3600.0,
                            help="seconds to wait for the upgrade to end (default 3600)")

    def handle(self, *args, apps=None, every=False, timeout=3600.0, **options):
        if not apps and not every:
            raise CommandError("say which: --app NAME (repeatable) or --all", returncode=2)
        try:
            upgrade = upgrades.create(None if every else list(dict.fromkeys(apps)), asked_by="manage.py upgradeapps")
        except upgrades.UnknownApps as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(f"upgrade {upgrade.pk}: {upgrade.steps.count()} to migrate")
        shown = set()
        deadline = time.monotonic() + timeout
        while True:
            upgrades.advance()
            upgrade.refresh_from_db()
            for step in upgrade.steps.filter(state__in=(DONE, FAILED)).exclude(pk__in=shown):
                shown.add(step.pk)
                if step.state == DONE:
                    self.stdout.write(self.style.SUCCESS(
                        f"{step.app} on {step.environment}: migrated ({', '.join(step.applied) or 'nothing left'})"))
                else:
                    self.stdout.write(self.style.ERROR(f"{step.app} on {step.environment}: FAILED: {step.error}"))
                self.stdout.flush()
            if upgrade.state != RUNNING:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"upgrade {upgrade.pk} still running after {timeout:g} s; follow it in the admin "
                                   f"or at /api/upgrades/{upgrade.pk}")
            time.sleep(POLL_SECONDS)
        summary = upgrades.upgrade_dict(Upgrade.objects.get(pk=upgrade.pk))
        self.stdout.write(f"upgrade {upgrade.pk} {summary['state']}: {summary['done']} migrated, "
                          f"{summary['failed']} failed")
        if upgrade.state == FAILED:
            raise CommandError(f"upgrade {upgrade.pk} failed for {summary['failed']} of {summary['total']}")
