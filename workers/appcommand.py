"""The MANAGE command: one Django management command run inside one hosted application (docs/architecture.md,
"Commands across applications").

The command runs in the agent's process with the application's database as the hosted models' database
(workers.routing.using) and, for a command that takes ``--database``, that option set to it; a ``--database`` given
by the caller is refused (it could name this worker's own database). Arguments are a list handed to Django's
parser, never a shell. Its output (stdout and stderr, interleaved) is kept up to contract.COMMAND_OUTPUT_MAX
characters; its exit status is 0, a CommandError's ``returncode``, a SystemExit's code, or 1 for any other
exception.
"""

import contextlib
import io
import traceback

from django.core.management import call_command, get_commands, load_command_class

from exchange import contract

from . import provisioning, routing


class Bounded(io.TextIOBase):
    """A text stream keeping at most LIMIT characters, counting what it dropped."""

    def __init__(self, limit):
        self.limit = limit
        self.parts, self.size, self.dropped = [], 0, 0

    def writable(self):
        return True

    def write(self, text):
        room = self.limit - self.size
        kept = text[:max(0, room)]
        if kept:
            self.parts.append(kept)
            self.size += len(kept)
        self.dropped += len(text) - len(kept)
        return len(text)

    def value(self):
        return "".join(self.parts)


def refusal(name, args):
    """Why NAME with ARGS may not run here, or None."""
    why = contract.manage_refusal(name, args)
    if why is None and name not in get_commands():
        why = f"{name!r} is not a management command on this worker"
    return why


def run(app, environment, payload, job_id=None):
    payload = payload or {}
    name, args = payload.get("name"), payload.get("args", [])
    answer = {"app": app, "environment": environment, "state": contract.RAN, "error": "", "output": "",
              "truncated": 0, "exit_status": 2}
    why = refusal(name, args)
    if why is None and not provisioning.database_exists(app):
        why = f"{app} has no database on {environment} (never started here)"
    if why is not None:
        return dict(answer, output=f"refused: {why}\n")
    out = Bounded(contract.COMMAND_OUTPUT_MAX)
    alias = provisioning.connect(app)
    command_args = list(args)
    command = load_command_class(get_commands()[name], name)
    parser = command.create_parser("manage.py", name)
    if any(action.dest == "database" for action in parser._actions):
        command_args.append(f"--database={alias}")
    status = 0
    with routing.using(alias), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            call_command(command, *command_args, stdout=out, stderr=out)
        except SystemExit as exc:  # argparse's refusal of a bad argument, or the command's own exit
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception as exc:
            status = getattr(exc, "returncode", 1) or 1
            if type(exc).__name__ == "CommandError":
                out.write(f"CommandError: {exc}\n")
            else:
                out.write(traceback.format_exc())
    return dict(answer, output=out.value(), truncated=out.dropped, exit_status=status)
