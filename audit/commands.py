"""Management commands that change something record themselves in the audit log: ``AuditedCommand`` in place of
``BaseCommand``, with the action (``audit_action``) and a target read from the command's options
(``audit_target``). One entry per run, once it has ended: ``ok``, or ``failed`` with the error (a CommandError's
message, an exception's). The actor is the command line: the OS user and the command as typed (secrets in it
removed); entries recorded by the code the command runs are the command line's too."""

from django.core.management.base import BaseCommand

from . import actions
from .log import Actor, acting_as, new_request_id, record

# Options that are the command's plumbing, not what it was asked to do.
PLUMBING = {"verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks", "stdout",
            "stderr"}


class AuditedCommand(BaseCommand):
    audit_action = ""

    def audit_target(self, options):
        return ""

    def execute(self, *args, **options):
        actor = Actor.command_line()
        params = {key: value for key, value in options.items() if key not in PLUMBING}
        rid = new_request_id()
        with acting_as(actor):
            try:
                result = super().execute(*args, **options)
            except (Exception, KeyboardInterrupt) as exc:
                record(actor, self.audit_action, self.audit_target(options), params, actions.FAILED,
                       detail=str(exc) or type(exc).__name__, request_id=rid)
                raise
        record(actor, self.audit_action, self.audit_target(options), params, request_id=rid)
        return result
