from django.core.management.base import BaseCommand

from exchange import keys


class Command(BaseCommand):
    help = ("Print a new Ed25519 key pair (exchange.keys): the private key for APP_ENVIRONMENT_KEY (or "
            "APP_SUPERVISOR_KEY), the public key to enroll on the supervisor (or give the workers). Where Django "
            "cannot start yet for want of a key, `python -m exchange.keys` does the same.")

    def handle(self, *args, **options):
        keys.main()
