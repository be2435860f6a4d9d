import os

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from audit import actions
from audit.commands import AuditedCommand

PASSWORD_VARIABLE = "DJANGO_SUPERUSER_PASSWORD"


class Command(AuditedCommand):
    audit_action = actions.USER_ENSURE_ADMIN

    def audit_target(self, options):
        return f"user:{options.get('username', '')}"

    help = (
        "Create the superuser USERNAME, or reset it: active, staff, superuser, with the given password. "
        f"The password comes from --password or, to keep it out of the process list, from ${PASSWORD_VARIABLE}."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="default: admin")
        parser.add_argument("--password", help=f"default: ${PASSWORD_VARIABLE}")
        parser.add_argument("--email", default="", help="set on creation, or when given")

    def handle(self, *args, username, password=None, email="", **options):
        password = password or os.environ.get(PASSWORD_VARIABLE, "")
        if not username:
            raise CommandError("--username must not be empty")
        if not password:
            raise CommandError(f"no password: pass --password or set {PASSWORD_VARIABLE}")
        User = get_user_model()
        with transaction.atomic():
            user = User._default_manager.select_for_update().filter(**{User.USERNAME_FIELD: username}).first()
            created = user is None
            if created:
                user = User(**{User.USERNAME_FIELD: username})
            if email or created:
                user.email = email
            user.is_active = True
            user.is_staff = True
            user.is_superuser = True
            user.set_password(password)
            user.save()
        self.stdout.write(f"superuser {username!r} {'created' if created else 'updated'}")
