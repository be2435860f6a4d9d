"""The web process of every role: ``python -m supervisor_project.web --host HOST --port PORT [uvicorn options]``.

Reads and checks the configuration as every process does (a bad one: the problems on stderr, exit status 2), then
replaces itself with uvicorn, run with ``supervisor_project.web.web_args`` and ``APP_WEB_PROCESSES`` processes
(uvicorn's own process manager, ``--workers``): the same process id, so a SIGTERM sent to it reaches uvicorn, which
stops every process it started. Checked here, before uvicorn starts any: a configuration its processes would each
refuse at import makes uvicorn's manager start them again forever.

Further arguments are uvicorn's options, passed on after ours (``--proxy-headers --forwarded-allow-ips=10.0.0.1`` for
a supervisor behind a TLS-terminating load balancer); the number of processes is APP_WEB_PROCESSES only.
"""

import argparse
import os
import sys

from supervisor_project import config

HOST = "127.0.0.1"

# The HTTP protocol of every web process: uvicorn's httptools protocol with bounded request heads.
HTTP_PROTOCOL = "supervisor_project.edge:BoundedHttpToolsProtocol"


def web_args(port, host=HOST, application="supervisor_project.asgi:application", processes=1, options=()):
    """uvicorn's arguments for a web process of any role, which every documented way of starting one runs through
    ``python -m supervisor_project.web`` (web_command): uvloop (installed, so uvicorn picks it) and httptools with a
    bound on each request's head (HTTP_PROTOCOL: size and time, see supervisor_project.edge), trusting no
    X-Forwarded-* header (--proxy-headers is for a supervisor behind a TLS-terminating load balancer), and no access
    log: a line per request was 14% of the proxy's CPU on a static file; /metrics counts the proxy's requests.
    PROCESSES is APP_WEB_PROCESSES, always given: uvicorn would otherwise take WEB_CONCURRENCY from the environment.
    OPTIONS are the operator's further uvicorn options (--proxy-headers, say), after ours so that they win."""
    return ["--host", host, "--port", str(port), "--workers", str(processes), "--no-proxy-headers", "--no-access-log",
            "--http", HTTP_PROTOCOL, *options, application]


# The documented command of every web process (the roles table, the Dockerfile, compose, Kubernetes, bin/cluster):
# it reads the configuration, then runs uvicorn with web_args and APP_WEB_PROCESSES processes.
WEB_ENTRY = "supervisor_project.web"


def web_command(port, host=HOST, python=sys.executable):
    return [python, "-m", WEB_ENTRY, "--host", host, "--port", str(port)]


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m supervisor_project.web",
        description="Serve App Supervisor's web (any role, from the environment's variables) with uvicorn.",
        epilog="Other arguments are passed on to uvicorn. Processes: APP_WEB_PROCESSES (default 1).",
    )
    parser.add_argument("--host", default=HOST, help=f"address to listen on (default: {HOST})")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    args, options = parser.parse_known_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, not {args.port}")
    for option in options:
        if option.split("=", 1)[0] in ("--workers", "--reload"):
            parser.error(f"{option.split('=', 1)[0]} is not for this command: set APP_WEB_PROCESSES to the number "
                         "of processes")
    return args, options


def command(argv, environ_map=None):
    """uvicorn's command line for ARGV, or ConfigError."""
    args, options = parse(argv)
    settings = config.load(environ_map)
    return [sys.executable, "-m", "uvicorn",
            *web_args(args.port, host=args.host, processes=settings.web_processes, options=options)]


def main(argv=None):
    with config.exit_on_config_error():
        argv = command(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
