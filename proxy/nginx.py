"""An export plan (proxy.export) as nginx configuration: a file to include inside ``http {}``, holding the
upstreams, the maps that route, and one ``server {}``.

How a request is routed, all from its raw request line, as the access proxy does (docs/architecture.md,
"Access proxy"):

1. ``$appsup_app``: the application the raw path names, ``/apps/<slug>/…``, unless the path holds anything the
   proxy refuses or decodes into something else (a dot segment, ``//``, an encoded '.', '/' or '\\'): nginx
   matches locations on the normalised path but forwards the raw one, so those go to the supervisor, which answers
   them itself.
2. An explicit choice (``_env`` in the query, or any query key with a percent escape, which might decode to it) goes
   to the supervisor too: it checks the name, remembers it in its cookie and strips the parameter.
3. An application on one environment goes there when it runs there; one on several goes to the environment its
   ``appsup_env`` cookie names when it runs there. Everything else goes to the supervisor.

Requests to a worker carry what the proxy forwards (proxy.headers): the client's Host (the worker's own host when
the client sent none), X-Forwarded-For (appended to), -Proto and -Host, WebSocket upgrades; not the supervisor's own
session, CSRF, language and messages cookies, nor ``appsup_env``; Location headers naming the worker's registered
addresses are rewritten to the client's host; a worker's cookies are confined to its application (a Path outside
``/apps/<name>/`` becomes it, a Domain the client's host). Bodies stream both ways (no request or response
buffering); request heads are bounded in size and time as every web process bounds them (supervisor_project.edge).

Every value written here is rebuilt from checked parts (proxy.export) and checked once more against a plain
character set (``_token``) before it is written: nothing read from Redis can add nginx syntax.
"""

import ipaddress
import re

from supervisor_project.config import DEFAULT_HEAD_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

from . import export, targets

# One "key value;" map entry per route; nginx hashes them. Keys are at most "<40>/<40>" characters long.
MAP_HASH_BUCKET_SIZE = 128
# Passes that each remove one withheld cookie from the Cookie header; a header still holding one after them loses
# every cookie (sent twice or more by a client, a cookie of the supervisor is never worth forwarding).
COOKIE_PASSES = 4
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:/\[\]-]+")
_COOKIE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# An application's raw path that nginx may forward as is: /apps/<slug>/ and nothing the proxy would refuse or that
# decodes to something else. (Inside nginx's double quotes a backslash is kept unless it escapes '"' or '\'.)
APP_PATH_REGEX = (r"~^/apps/(?<appsup_name>[a-z][a-z0-9_-]{0,39})(?=/)"
                  r"(?![^?]*(?:/\.|//|%2[eEfF]|%5[cC]))")
# A query that chooses an environment (or might, once decoded).
ENV_QUERY_REGEX = r"~(?:^|&)(?:_env|[^&=]*%[^&=]*)(?:=|&|$)"


class Unsafe(ValueError):
    """A value that would not be a plain nginx token (never expected: proxy.export checks every part first)."""


def _token(value):
    text = str(value)
    if not _TOKEN_RE.fullmatch(text):
        raise Unsafe(f"{text!r} cannot be written into an nginx configuration")
    return text


def _comment(text):
    """TEXT on one comment line: printable ASCII only."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def _seconds(value):
    return f"{max(1, round(float(value) * 1000))}ms"


def _server(address, port):
    return f"{'[' + address + ']' if ':' in address else address}:{int(port)}"


def cookie_names(names):
    """The cookies never forwarded to a worker, as a regex alternation; Unsafe for a name that is not a plain one."""
    checked = sorted(set(names) | {targets.ENV_COOKIE})
    for name in checked:
        if not _COOKIE_NAME_RE.fullmatch(name):
            raise Unsafe(f"the cookie name {name!r} cannot be written into an nginx configuration")
    return "|".join(name.replace(".", r"\.") for name in checked)


def valid_listen(value):
    """Whether VALUE is "PORT", "ADDRESS:PORT" or "[IPv6]:PORT", as nginx's listen takes it."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if not host:
        return True
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.IPv6Address(host[1:-1]).scope_id is None
        except ValueError:
            return False
    return export.HOSTNAME_RE.fullmatch(host) is not None


def _upstream_block(upstream, keepalive):
    lines = [f"upstream {_token(upstream.name)} {{"]
    if upstream.environment:
        lines[0] += f"  # environment {_token(upstream.environment)}, {_token(upstream.origin.url)}"
    for i, address in enumerate(upstream.addresses):
        lines.append(f"    server {_token(_server(address, upstream.origin.port))}{' backup' if i else ''};")
    lines += [
        f"    keepalive {keepalive};",
        # Below the 5 s uvicorn keeps idle connections: nginx closes first, never reuses a closing one.
        "    keepalive_timeout 4s;",
        "}",
    ]
    return lines


def _map(source, variable, entries, default):
    lines = [f"map {source} {variable} {{", f"    default {default};"]
    lines += [f"    {key} {value};" for key, value in entries]
    lines.append("}")
    return lines


def _hash_max_size(entries):
    size = 2048
    while size < 2 * entries:
        size *= 2
    return size


def _application_location(app, proxy_pass):
    """The location of an application nginx may route to a worker: its cookies confined to /apps/<app>/ as the
    proxy confines them (proxy.headers.confined_cookie), a Path outside it replaced, a Domain made the client's
    host. (nginx cannot drop one cookie by name: one named as the supervisor's own stays, confined.)"""
    prefix = f"{targets.PREFIX}/{_token(app)}/"
    return [
        # Without it, nginx would answer /apps/<app> itself with a redirect; the supervisor answers it.
        f"    location = {prefix[:-1]} {{",
        proxy_pass,
        "    }",
        f"    location {prefix} {{",
        f"        proxy_cookie_path ~^(?!{prefix}) {prefix};",
        "        proxy_cookie_domain ~. $host;",
        proxy_pass,
        "    }",
    ]


def _host_entries(apps_domain, domains):
    """$host -> the application whose own host it is: <name>.APPS_DOMAIN, and the custom DOMAINS."""
    subdomain = r"^(?<appsup_host_name>[a-z][a-z0-9_-]{0,39})\." + re.escape(_token(apps_domain)) + "$"
    return [(f'"~{subdomain}"', "$appsup_host_name"),
            *((_token(domain), _token(app)) for domain, app in sorted(domains.items()))]


def render(plan, *, listen="80", server_names=(), max_body=None, connect_timeout=5, read_timeout=60,
           withheld_cookies=(), ca_file="/etc/ssl/certs/ca-certificates.crt", keepalive=32,
           max_header_bytes=DEFAULT_MAX_HEADER_BYTES, head_timeout=DEFAULT_HEAD_TIMEOUT, apps_domain=""):
    """The nginx configuration for PLAN, as text. Same plan, same text: everything is written sorted.

    With APPS_DOMAIN (APP_APPS_DOMAIN), an application is routed by its own host (<name>.APPS_DOMAIN, or one of its
    custom domains), its whole path its own, as the supervisor routes it (proxy.hosts); /apps/<name>/ goes to the
    supervisor, which sends it to the application's own origin."""
    if not valid_listen(listen):
        raise Unsafe(f"{listen!r} is not a listen address ([ADDRESS:]PORT)")
    withheld = cookie_names(withheld_cookies)
    routes = list(plan.routes())
    upstreams = [plan.supervisor, *(plan.upstreams[env] for env in sorted(plan.upstreams))]
    https = [u for u in upstreams if u.origin.scheme == "https"]

    out = [
        "# App Supervisor's access proxy for nginx, written by `manage.py exportproxy` (proxy/nginx.py).",
        "# Include it inside http {}, e.g. as /etc/nginx/conf.d/appsup.conf, or with",
        "#     include /etc/nginx/appsup.conf;",
        "# It is a snapshot: export again and `nginx -s reload` when applications start or stop or environments",
        "# change. What it does not route goes to the supervisor, which decides it as its own proxy does.",
        f"# {len(plan.applications)} applications routed to {len(plan.upstreams)} environments.",
    ]
    if plan.skipped:
        out.append("# Left to the supervisor:")
        out += [f"#   {_comment(s.kind)} {_comment(s.name or '(invalid name)')}: {_comment(s.reason)}"
                for s in plan.skipped]
    out += [
        "",
        f"map_hash_bucket_size {MAP_HASH_BUCKET_SIZE};",
        f"map_hash_max_size {_hash_max_size(len(routes))};",
        "",
    ]
    for upstream in upstreams:
        out += _upstream_block(upstream, keepalive) + [""]

    # 1-2: the application a request may be routed for by nginx ("" when not).
    if apps_domain:
        out += _map("$host", "$appsup_app", _host_entries(apps_domain, plan.domains), '""')
    else:
        out += _map("$request_uri", "$appsup_app", [(f'"{APP_PATH_REGEX}"', "$appsup_name")], '""')
    out += _map("$args", "$appsup_choosing", [(f'"{ENV_QUERY_REGEX}"', "1")], '""')
    out += _map("$appsup_choosing", "$appsup_routed_app", [('""', "$appsup_app")], '""')
    # 3: one environment, else the one the cookie names, else the supervisor.
    single = [(_token(app), _token(upstream)) for app, env, upstream in routes if env is None]
    chosen = [(f'"{_token(app)}/{_token(env)}"', _token(upstream)) for app, env, upstream in routes if env]
    out += _map("$appsup_routed_app", "$appsup_single", single, '""')
    out += _map("$appsup_single", "$appsup_fallback", [('""', export.SUPERVISOR)], "$appsup_single")
    out += _map(f'"$appsup_routed_app/$cookie_{targets.ENV_COOKIE}"', "$appsup_upstream", chosen, "$appsup_fallback")
    out += _map("$appsup_upstream", "$appsup_scheme", [(_token(u.name), "https") for u in https], "http")
    out += _map("$appsup_upstream", "$appsup_upstream_host",
                [(_token(u.name), _token(u.origin.netloc)) for u in upstreams], '""')
    if https:
        out += _map("$appsup_upstream", "$appsup_tls_name",
                    [(_token(u.name), _token(u.origin.host)) for u in https], '""')
    out += [""]

    # Headers as proxy.headers sets them.
    out += _map("$http_host", "$appsup_host", [('""', "$appsup_upstream_host")], "$http_host")
    out += _map("$http_host", "$appsup_public", [('""', '""')], '"$scheme://$http_host"')
    out += _map("$http_upgrade", "$appsup_connection", [('""', '""')], "upgrade")
    previous = "$http_cookie"
    for n in range(1, COOKIE_PASSES + 1):
        before, after = f"appsup_c{n}a", f"appsup_c{n}b"
        out += _map(previous, f"$appsup_cookie_{n}",
                    [(f'"~^(?<{before}>.*?)(?:^|;\\s*)(?:{withheld})\\s*=[^;]*(?<{after}>.*)$"',
                      f'"${before}${after}"')], previous)
        previous = f"$appsup_cookie_{n}"
    out += _map(previous, "$appsup_worker_cookie", [
        (f'"~(?:^|;)\\s*(?:{withheld})\\s*="', '""'),
        ('"~^;\\s*(?<appsup_cookie_rest>.*)$"', "$appsup_cookie_rest"),  # what a removal left in front
    ], previous)
    out += _map("$appsup_upstream", "$appsup_cookie", [(export.SUPERVISOR, "$http_cookie")], "$appsup_worker_cookie")
    out += [""]

    out += ["server {", f"    listen {_token(listen)};"]
    if server_names:
        out.append(f"    server_name {' '.join(_token(n) for n in server_names)};")
    out += [
        f"    client_max_body_size {int(max_body or 0)};",
        # The bounds of every web process on a request's head (supervisor_project.edge): its size and its time.
        f"    large_client_header_buffers 1 {int(max_header_bytes)};",
        f"    client_header_timeout {_seconds(head_timeout)};",
        "",
        "    proxy_http_version 1.1;",
        "    proxy_request_buffering off;",
        "    proxy_buffering off;",
        f"    proxy_connect_timeout {_seconds(connect_timeout)};",
        f"    proxy_read_timeout {_seconds(read_timeout)};",
        f"    proxy_send_timeout {_seconds(read_timeout)};",
        "    proxy_set_header Host $appsup_host;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $http_host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $appsup_connection;",
        "    proxy_set_header Cookie $appsup_cookie;",
        '    proxy_set_header Proxy "";',
    ]
    if apps_domain:
        # Which application the host is: a worker serves a custom domain only for the application that claims it.
        out += ["    proxy_set_header X-Appsup-App $appsup_app;", "    proxy_cookie_domain ~. $host;"]
    # The workers' registered addresses in Location (and Refresh) headers become the client's host; nothing else is
    # rewritten (nginx's "default" rewriting does not apply to a proxy_pass with variables).
    redirects = sorted({url for u in upstreams for url in u.known})
    out += [f"    proxy_redirect {_token(url)}/ $appsup_public/;" for url in redirects] or ["    proxy_redirect off;"]
    if https:
        out += [
            "    proxy_ssl_server_name on;",
            "    proxy_ssl_name $appsup_tls_name;",
            "    proxy_ssl_verify on;",
            f"    proxy_ssl_trusted_certificate {_token(ca_file)};",
        ]
    proxy_pass = "        proxy_pass $appsup_scheme://$appsup_upstream;"
    out += ["", "    location / {", proxy_pass, "    }"]
    for app in sorted({app for app, _, _ in routes}) if not apps_domain else ():
        out += _application_location(app, proxy_pass)
    out.append("}")
    return "\n".join(out) + "\n"


def standalone(include, prefix, listen_user_root=False):
    """A whole nginx.conf around INCLUDE (the exported file) that keeps everything under PREFIX, for trying an
    export (``nginx -p PREFIX -c PREFIX/nginx.conf``) and for the tests and the bench."""
    prefix = str(prefix).rstrip("/")
    lines = [
        "daemon off;",
        "worker_processes 1;",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log warn;",
    ]
    if listen_user_root:
        lines.append("user root;")  # the workers must read files under a directory only root may enter
    lines += [
        "events { worker_connections 1024; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {prefix}/client_body;",
        f"    proxy_temp_path {prefix}/proxy;",
        f"    fastcgi_temp_path {prefix}/fastcgi;",
        f"    uwsgi_temp_path {prefix}/uwsgi;",
        f"    scgi_temp_path {prefix}/scgi;",
        f"    include {include};",
        "}",
    ]
    return "\n".join(lines) + "\n"
