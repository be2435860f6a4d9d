from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controller.loop import Controller


class Command(BaseCommand):
    help = (
        "Run the supervisor's controller: keep Redis's configuration cache whole, mirror heartbeats and states, "
        "and drive every application to its desired state. Several may run; one acts at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true",
                            help="one pass (reconciling every drifting application in turn), then exit")

    def handle(self, *args, once=False, **options):
        if settings.APP_MODE != "supervisor":
            raise CommandError("runsupervisor runs the supervisor's controller: set APP_MODE=supervisor")
        controller = Controller()
        controller.install_signal_handlers()
        controller.run(once=once)
