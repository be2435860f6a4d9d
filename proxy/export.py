"""What the access proxy would route on its own, as a plan another proxy can follow (``manage.py exportproxy``;
proxy.nginx writes it for nginx).

The plan is read from the supervisor's Redis with the proxy's own trust (docs/architecture.md, "Access proxy"):

- applications from the signed configuration cache, named by a slug (``fullmatch``: the contract's ``$`` would
  also take a trailing newline, which has no place in another program's configuration);
- environments from signed registrations only, online (neither degraded nor offline), whose address passes the
  proxy's checks: the registered proxy URL, else URL, as ``proxy.targets`` picks it (http or https), resolved now
  and each address checked by ``proxy.networks`` (APP_PROXY_ALLOWED_NETWORKS, never link-local or metadata
  addresses). The plan names the addresses that passed, not the host name, so that nothing resolves it again later
  to somewhere else;
- a route only where the application's signed status there is ``running``.

Everything the plan does not route stays with the supervisor, which decides it live as it does today: applications
that do not run (its 503 page says why), unknown ones (404), several environments without a choice (its page that
asks, 300), an explicit ``?_env=`` (it checks the name, remembers the choice in its cookie and strips the parameter),
paths it refuses (dot segments). So a plan can be out of date without sending anyone to the wrong place: a worker
answers 503 itself for an application stopped since, and one started since is served through the supervisor.

Only values rebuilt from checked parts leave this module: slugs, IP addresses, port numbers, host names of letters,
digits, '-', '_' and '.'.
"""

import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from exchange import cache, contract, registry
from exchange import status as status_module
from exchange.directory import AppView
from supervisor_project.config import is_domain_name

from . import networks, targets

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
SUPERVISOR = "appsup_supervisor"
ENVIRONMENT_PREFIX = "appsup_env_"


class IncompleteCache(Exception):
    """The configuration cache in Redis is being rebuilt: a plan made now would leave applications out."""


class UnsupportedAddress(ValueError):
    """A URL the export cannot turn into an upstream (the reason is the message)."""


def valid_name(name):
    return isinstance(name, str) and contract.NAME_RE.fullmatch(name) is not None


def valid_app_name(name):
    return valid_name(name) and name not in contract.RESERVED_APP_NAMES


@dataclass(frozen=True)
class Origin:
    """scheme://host:port, every part checked."""

    scheme: str
    host: str  # a host name, or an IP address (IPv6 without brackets)
    port: int

    @property
    def host_in_url(self):
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def netloc(self):
        """As a Host header names it: the port only when it is not the scheme's own."""
        default = DEFAULT_PORTS[self.scheme] == self.port
        return self.host_in_url if default else f"{self.host_in_url}:{self.port}"

    @property
    def url(self):
        return f"{self.scheme}://{self.netloc}"


def parse_origin(url):
    """The Origin of URL, an address with nothing after the host and port; UnsupportedAddress says why not."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket, say
        raise UnsupportedAddress("it is not a URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise UnsupportedAddress("its scheme is not http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsupportedAddress("it carries credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UnsupportedAddress("it has a path, query or fragment (only scheme://host[:port] is exported)")
    try:
        port = parts.port
    except ValueError:
        raise UnsupportedAddress("its port is not a number from 0 to 65535") from None
    host = parts.hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME_RE.fullmatch(host) or len(host) > 253:
            raise UnsupportedAddress("its host is neither a host name nor an IP address") from None
    else:
        if getattr(address, "scope_id", None):
            raise UnsupportedAddress("its address names an interface (a scoped IPv6 address)")
        host = str(address)
    port = port or DEFAULT_PORTS[parts.scheme]
    if not 0 < port < 65536:
        raise UnsupportedAddress("its port is not a number from 1 to 65535")
    return Origin(parts.scheme, host, port)


def resolve(host, port):
    """The addresses HOST resolves to, in the resolver's order, once each (an IP address: itself)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]))
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class Upstream:
    """Where one environment (or the supervisor) is reached: ORIGIN as registered, through ADDRESSES (checked IP
    addresses, the first preferred, as the proxy's connector tries them in order)."""

    name: str
    environment: str  # "" for the supervisor
    origin: Origin
    addresses: tuple
    # The environment's registered addresses, whose Location headers are rewritten to the client's host.
    known: tuple = ()


@dataclass(frozen=True)
class Skip:
    kind: str  # "application" or "environment"
    name: str  # a slug, or "" when the name itself is not one (never shown then)
    reason: str


@dataclass
class Plan:
    supervisor: Upstream
    upstreams: dict = field(default_factory=dict)  # environment -> Upstream, those some route uses
    single: dict = field(default_factory=dict)  # application -> environment (one environment: no choice to make)
    chosen: dict = field(default_factory=dict)  # application -> [environments], by cookie (several environments)
    skipped: list = field(default_factory=list)
    domains: dict = field(default_factory=dict)  # custom domain -> application (routed ones only)

    @property
    def applications(self):
        return sorted({*self.single, *self.chosen})

    def routes(self):
        """Sorted (application, environment or None for "no choice", upstream name)."""
        for app in sorted(self.single):
            yield app, None, self.upstreams[self.single[app]].name
        for app in sorted(self.chosen):
            for env in sorted(self.chosen[app]):
                yield app, env, self.upstreams[env].name


def environment_upstream(name, registration, now, resolver=resolve):
    """(Upstream, "") for an environment the proxy would forward to, else (None, why not)."""
    if registration is None:
        return None, "no verified registration"
    liveness = registry.status_of(registration, now)
    if liveness != contract.ONLINE:
        return None, liveness
    try:
        base = targets._registered_base(registration)
    except ValueError:
        base = None
    if base is None:
        return None, "no http(s) address registered"
    try:
        origin = parse_origin(base)
    except UnsupportedAddress as exc:
        return None, f"address not exported: {exc}"
    try:
        addresses = resolver(origin.host, origin.port)
    except OSError:
        return None, f"{origin.host} does not resolve"
    allowed, refusals = [], []
    for address in addresses:
        reason = networks.refusal(address)
        (refusals if reason else allowed).append(reason or address)
    if not allowed:
        return None, "address refused: " + ("; ".join(refusals) or "no address")
    known = []
    for key in ("url", "proxy_url"):
        try:
            url = parse_origin((registration.get(key) or "").rstrip("/")).url
        except UnsupportedAddress:
            continue
        if url not in known:
            known.append(url)
    return Upstream(ENVIRONMENT_PREFIX + name, name, origin, tuple(allowed), tuple(sorted(known))), ""


def _not_running(states, refused):
    """Why an application has no route, in a few words (for the summary and the configuration's comments)."""
    parts = []
    for state in states:
        if state.running and not state.online:
            parts.append(f"{state.name} is {state.status}")
        elif state.running and state.name in refused:
            parts.append(f"{state.name}: {refused[state.name]}")
        else:
            parts.append(f"{state.state} on {state.name}")
    return "not running: " + ", ".join(parts) if parts else "placed on no environment"


def collect(redis, supervisor, now=None, resolver=resolve):
    """The Plan for what Redis holds now. SUPERVISOR: the Upstream everything else goes to. Raises IncompleteCache
    while the configuration cache is being rebuilt, redis.RedisError when Redis cannot be read."""
    now = time.time() if now is None else now
    if not cache.is_ready(redis):
        raise IncompleteCache("the configuration cache in Redis is incomplete (a runsupervisor rebuilds it within "
                              "a second; is one running?)")
    raw_apps = redis.hgetall(contract.APPS_KEY)
    registrations, rejected = registry.read_all(redis)
    plan = Plan(supervisor=supervisor)
    for env in sorted(rejected):
        plan.skipped.append(Skip("environment", env if valid_name(env) else "", "its registration does not verify"))
    evaluated, refused = {}, {}

    def upstream_of(env):
        if env not in evaluated:
            upstream, why = environment_upstream(env, registrations.get(env), now, resolver)
            evaluated[env] = upstream
            if upstream is None:
                refused[env] = why
                if env not in rejected:
                    plan.skipped.append(Skip("environment", env, why))
        return evaluated[env]

    for raw_name in sorted(raw_apps):
        name = raw_name.decode("utf-8", errors="replace")
        if not valid_app_name(name):
            plan.skipped.append(Skip("application", "", "its name is not a valid application name"))
            continue
        entry = cache.decode(raw_apps[raw_name], name)
        if entry is None:
            plan.skipped.append(Skip("application", name, "its configuration entry does not verify"))
            continue
        envs = [env for env in entry.get("environments", []) if valid_name(env)]
        fields = [contract.status_field(name, env) for env in envs]
        raw_statuses = redis.hmget(contract.STATUSES_KEY, fields) if fields else []
        statuses = {env: status_module.decode(raw, name, env) for env, raw in zip(envs, raw_statuses)}
        view = AppView(name, dict(entry, environments=envs),
                       {env: registrations[env] for env in envs if env in registrations},
                       {env: s for env, s in statuses.items() if s is not None})
        states = targets.environment_states(view, now=now)
        routable = [s.name for s in states if s.running and s.online and upstream_of(s.name) is not None]
        if not routable:
            plan.skipped.append(Skip("application", name, _not_running(states, refused)))
            continue
        for env in routable:
            plan.upstreams[env] = evaluated[env]
        for domain in entry.get("domains") or ():
            if isinstance(domain, str) and is_domain_name(domain):
                plan.domains[domain] = name
        if len(envs) == 1:
            plan.single[name] = envs[0]
        else:
            plan.chosen[name] = routable
    plan.skipped.sort(key=lambda s: (s.kind, s.name, s.reason))
    return plan


def supervisor_upstream(url, resolver=None):
    """The supervisor's Upstream from the operator's URL (trusted: not subject to APP_PROXY_ALLOWED_NETWORKS, and
    named as given, for nginx to resolve). UnsupportedAddress when URL is not scheme://host[:port]."""
    origin = parse_origin(url)
    return Upstream(SUPERVISOR, "", origin, (origin.host,))


def summary(plan):
    """One line for people: how many applications and environments are routed, what was skipped and why."""
    apps, envs = len(plan.applications), len(plan.upstreams)
    line = (f"{apps} application{'s' if apps != 1 else ''} routed by nginx to {envs} "
            f"environment{'s' if envs != 1 else ''}")
    if plan.chosen:
        line += f" ({len(plan.chosen)} by the environment remembered in the appsup_env cookie)"
    if not plan.skipped:
        return line + "; nothing skipped"
    shown = [f"{s.kind} {s.name or '(invalid name)'} ({s.reason})" for s in plan.skipped[:10]]
    more = len(plan.skipped) - len(shown)
    return (f"{line}; {len(plan.skipped)} skipped, left to the supervisor: " + "; ".join(shown)
            + (f"; and {more} more" if more else ""))
