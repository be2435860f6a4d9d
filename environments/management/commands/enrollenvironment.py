import redis
from django.core.management.base import BaseCommand, CommandError

from environments import enrollment
from exchange.redis_client import supervisor_redis


class Command(BaseCommand):
    help = (
        "Record the public key environment NAME signs with (`python -m exchange.keys` on the worker prints a key "
        "pair), so that its registration, heartbeats and statuses are accepted. --keep-current adds it beside the "
        "key in use (a rotation: both are valid); --retire KEY stops accepting an old one."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the environment's name (its ENVIRONMENT_NAME)")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--public-key", help="the environment's public key (URL-safe base64), as --public-key=KEY: "
                            "a key may begin with -")
        action.add_argument("--retire", metavar="KEY", help="a public key of NAME no longer to accept (--retire=KEY)")
        parser.add_argument("--keep-current", action="store_true",
                            help="keep the key enrolled now valid too (until it is retired)")

    def handle(self, *args, name, public_key=None, retire=None, keep_current=False, **options):
        try:
            if retire:
                valid = enrollment.retire(name, retire)
            else:
                valid = enrollment.enroll(name, public_key, keep_current=keep_current)
        except enrollment.EnrollmentError as exc:
            raise CommandError(str(exc)) from None
        try:
            enrollment.publish(supervisor_redis())
        except redis.RedisError as exc:
            self.stderr.write(f"Redis is unavailable ({exc}); the controller publishes the keys once it answers")
        self.stdout.write(f"environment {name}: {len(valid)} key(s) valid: {', '.join(valid) or 'none'}")
