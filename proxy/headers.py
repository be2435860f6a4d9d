"""Header rules shared by HTTP and WebSocket forwarding: hop-by-hop headers, X-Forwarded-*, Location rewriting,
worker cookies confined to their application."""

import re
from urllib.parse import urlsplit

# RFC 9110 §7.6.1, plus the obsolete ones still seen in the wild. Any Proxy-* header is dropped too, and so is any
# header the Connection header names.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade"}
)
# Request headers the proxy sets itself (or must not pass: it does not do 100-continue with the worker).
REPLACED_ON_REQUEST = frozenset(
    {b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for", b"cookie", b"expect", b"x-appsup-app"}
)
# A Host header worth echoing: a name or an IP literal, with an optional port.
_HOST_RE = re.compile(rb"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def connection_named(headers):
    """Lower-cased header names listed in Connection headers."""
    named = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def is_hop_by_hop(name, named):
    return name in HOP_BY_HOP or name.startswith(b"proxy-") or name in named


def get(headers, wanted):
    for name, value in headers:
        if name == wanted:
            return value
    return None


def client_host(scope):
    """The Host the client asked for, if it looks like one (else None)."""
    host = get(scope.get("headers") or (), b"host")
    if host and _HOST_RE.match(host.strip()):
        return host.strip()
    return None


def public_scheme(scope):
    scheme = scope.get("scheme") or "http"
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


def forwarded_request_headers(scope, incoming, upstream_netloc, skip=frozenset()):
    """The request headers for the worker: the client's, less hop-by-hop ones and SKIP, with Host and
    X-Forwarded-For/-Proto/-Host set by the proxy, and the proxy's own cookie removed."""
    source = scope.get("headers") or ()
    named = connection_named(source)
    host = client_host(scope)
    out = [(b"host", host or upstream_netloc)]
    forwarded_for = []
    for name, value in source:
        if is_hop_by_hop(name, named) or name in skip:
            continue
        if name == b"x-forwarded-for":
            forwarded_for.append(value.strip())
        elif name not in REPLACED_ON_REQUEST:
            out.append((name, value))
    if incoming.cookie_header:
        out.append((b"cookie", incoming.cookie_header))
    client = scope.get("client")
    if client and client[0]:
        forwarded_for.append(str(client[0]).encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(v for v in forwarded_for if v)))
    out.append((b"x-forwarded-proto", public_scheme(scope).encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    if incoming.own_host:
        # Which application the host is (a custom domain says nothing by itself); the worker checks that the
        # application claims the host (workers.hosting).
        out.append((b"x-appsup-app", incoming.name.encode("latin-1")))
    return out


def confined_cookie(value, prefix, withheld):
    """A worker's Set-Cookie VALUE confined to its application's PREFIX (b"/apps/crm/"): a Path outside PREFIX (or
    none) becomes PREFIX, a Domain is removed. None when the cookie is named as one of WITHHELD (bytes): one of the
    supervisor's own, which the browser would otherwise let it overwrite or shadow.

    The worker's own middleware already scopes every cookie so (workers.hosting.scope_cookies); this holds for
    whatever answers at a registered address."""
    first, *attributes = value.split(b";")
    if first.partition(b"=")[0].strip() in withheld:
        return None
    parts = []  # (lower-cased name, attribute)
    for attribute in attributes:
        attribute = attribute.strip()
        if attribute:
            parts.append((attribute.partition(b"=")[0].strip().lower(), attribute))
    paths = [i for i, (key, _) in enumerate(parts) if key == b"path"]  # the last one counts, as in browsers
    path = parts[paths[-1]][1].partition(b"=")[2].strip() if paths else b""
    confined = b"Path=" + (path if path.startswith(prefix) else prefix)
    kept = [first.strip()]
    for i, (key, attribute) in enumerate(parts):
        if key == b"path" and i == paths[-1]:
            kept.append(confined)
        elif key not in (b"path", b"domain"):
            kept.append(attribute)
    if not paths:
        kept.append(confined)
    return b"; ".join(kept)


def _origin(parts, default_scheme=None):
    scheme = (parts.scheme or default_scheme or "").lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def rewrite_location(value, known_urls, public_origin):
    """VALUE with a worker's address (any of KNOWN_URLS) replaced by PUBLIC_ORIGIN ("" for a path-only URL)."""
    try:
        text = value.decode("latin-1").strip()
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return value
    parts = urlsplit(text)
    if not parts.netloc:
        return value  # relative: already on the supervisor
    for known in known_urls:
        base = urlsplit(known)
        if _origin(parts, default_scheme=base.scheme) != _origin(base):
            continue
        prefix = base.path.rstrip("/")
        path = parts.path or "/"
        if prefix:
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            path = path[len(prefix):] or "/"
        rebuilt = public_origin + path
        if parts.query:
            rebuilt += "?" + parts.query
        if parts.fragment:
            rebuilt += "#" + parts.fragment
        return rebuilt.encode("latin-1")
    return value


def public_origin(scope):
    host = client_host(scope)
    if not host:
        return ""
    return f"{public_scheme(scope)}://{host.decode('latin-1')}"
