import functools

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.agent import Agent, probe_web


class Command(BaseCommand):
    help = "Run this environment's worker agent: register, heartbeat, and execute lifecycle commands."

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="register, run the commands already queued, deregister and exit"
        )
        parser.add_argument(
            "--no-web-probe", action="store_true",
            help="do not probe this environment's web process (/healthz); its health is then reported as unknown",
        )

    def handle(self, *args, once=False, no_web_probe=False, **options):
        if settings.APP_MODE != "worker":
            raise CommandError(
                "runworker runs a worker environment: set APP_MODE=worker, ENVIRONMENT_NAME and ENVIRONMENT_URL"
            )
        # The address the supervisor proxies to is the one whose health matters to it.
        web = settings.ENVIRONMENT_PROXY_URL or settings.ENVIRONMENT_URL
        agent = Agent(
            settings.ENVIRONMENT_NAME,
            settings.ENVIRONMENT_URL,
            settings.ENVIRONMENT_PROXY_URL,
            settings.APP_HEARTBEAT_INTERVAL,
            probe=None if no_web_probe else functools.partial(probe_web, web),
        )
        agent.install_signal_handlers()
        agent.run(once=once)
