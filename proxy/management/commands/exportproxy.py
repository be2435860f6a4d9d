"""``manage.py exportproxy [--format nginx] [--output FILE] [--supervisor-upstream URL]``: the access proxy's
routing as another proxy's configuration (proxy.export reads it from Redis, proxy.nginx writes it).

Exit status 2 for a bad option (unknown format, an output that cannot be written, an address that is not
scheme://host[:port]) or a process that is not the supervisor; 1 when Redis cannot be read or its configuration
cache is incomplete. The configuration goes to FILE (written whole, then renamed into place) or to stdout; a
one-line summary goes to stderr.
"""

import os
import tempfile
from pathlib import Path

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from exchange.cookies import framework_cookie_names
from exchange.redis_client import supervisor_redis
from proxy import export, nginx

FORMATS = ("nginx",)
DEFAULT_SUPERVISOR_PORT = 14000


def _bad(message):
    return CommandError(message, returncode=2)


class Command(BaseCommand):
    help = ("Write the access proxy's routing (running applications on verified, online environments) as an nginx "
            "configuration to include inside http {}; everything else goes to the supervisor.")

    def add_arguments(self, parser):
        parser.add_argument("--format", default="nginx", help=f"only {', '.join(FORMATS)} (the default)")
        parser.add_argument("--output", "-o", default="-", help="the file to write (default: stdout)")
        parser.add_argument("--supervisor-upstream", default=None, metavar="URL",
                            help="where nginx reaches the supervisor's web process "
                                 "(default: http://127.0.0.1:<--supervisor-port>)")
        parser.add_argument("--supervisor-port", default=DEFAULT_SUPERVISOR_PORT, metavar="PORT",
                            help=f"the supervisor's port on 127.0.0.1 (default {DEFAULT_SUPERVISOR_PORT})")
        parser.add_argument("--listen", default="80", metavar="[ADDRESS:]PORT", help="nginx's listen (default 80)")
        parser.add_argument("--server-name", action="append", default=[], metavar="NAME",
                            help="nginx's server_name (repeat for several; default: none)")

    def handle(self, *args, format, output, supervisor_upstream, supervisor_port, listen, server_name, **options):
        if settings.APP_MODE != "supervisor":
            raise _bad("exportproxy reads the supervisor's view of the data plane: set APP_MODE=supervisor")
        if format not in FORMATS:
            raise _bad(f"unknown format {format!r}: only {', '.join(FORMATS)}")
        if supervisor_upstream is None:
            if not str(supervisor_port).isdigit() or not 0 < int(supervisor_port) < 65536:
                raise _bad(f"--supervisor-port: {supervisor_port!r} is not a port number from 1 to 65535")
            supervisor_upstream = f"http://127.0.0.1:{int(supervisor_port)}"
        try:
            supervisor = export.supervisor_upstream(supervisor_upstream)
        except export.UnsupportedAddress as exc:
            raise _bad(f"--supervisor-upstream: {supervisor_upstream!r} is not usable: {exc}") from None
        if not nginx.valid_listen(listen):
            raise _bad(f"--listen: {listen!r} is not PORT, ADDRESS:PORT or [IPv6]:PORT")
        for name in server_name:
            if not export.HOSTNAME_RE.fullmatch(name.removeprefix("*.")) and name != "_":
                raise _bad(f"--server-name: {name!r} is not a host name")
        target = None if output == "-" else Path(output)
        if target is not None:
            problem = _unwritable(target)
            if problem:
                raise _bad(f"--output: cannot write {output}: {problem}")

        try:
            plan = export.collect(supervisor_redis(), supervisor)
        except export.IncompleteCache as exc:
            raise CommandError(f"not exported: {exc}") from None
        except redis.RedisError as exc:
            raise CommandError(f"not exported: cannot read the supervisor's Redis: {exc}") from None
        try:
            text = nginx.render(
                plan, listen=listen, server_names=server_name, max_body=settings.APP_PROXY_MAX_BODY,
                connect_timeout=settings.APP_PROXY_CONNECT_TIMEOUT, read_timeout=settings.APP_PROXY_READ_TIMEOUT,
                withheld_cookies=framework_cookie_names(), max_header_bytes=settings.APP_MAX_HEADER_BYTES,
                head_timeout=settings.APP_HEAD_TIMEOUT, apps_domain=settings.APP_APPS_DOMAIN)
        except nginx.Unsafe as exc:
            raise CommandError(f"not exported: {exc}") from None

        if target is None:
            self.stdout.write(text, ending="")
        else:
            try:
                _write(target, text)
            except OSError as exc:
                raise _bad(f"--output: cannot write {output}: {exc.strerror or exc}") from None
        self.stderr.write(f"exportproxy: {export.summary(plan)}")


def _unwritable(path):
    """Why PATH cannot be written (None when it can), before anything is read from Redis."""
    if path.is_dir():
        return "it is a directory"
    directory = path.parent
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return "permission denied"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"permission denied in {directory}"
    return None


def _write(path, text):
    """Whole or not at all: nginx reloading meanwhile never reads half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
