from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.agent import Agent


class Command(BaseCommand):
    help = "Run this environment's worker agent: register, heartbeat, and execute lifecycle commands."

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="register, run the commands already queued, deregister and exit"
        )

    def handle(self, *args, once=False, **options):
        if settings.APP_MODE != "worker":
            raise CommandError(
                "runworker runs a worker environment: set APP_MODE=worker, ENVIRONMENT_NAME and ENVIRONMENT_URL"
            )
        agent = Agent(
            settings.ENVIRONMENT_NAME,
            settings.ENVIRONMENT_URL,
            settings.ENVIRONMENT_PROXY_URL,
            settings.APP_HEARTBEAT_INTERVAL,
        )
        agent.install_signal_handlers()
        agent.run(once=once)
