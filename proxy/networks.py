"""Where the access proxy may connect: the addresses an environment's URL resolves to, checked against the operator's
networks (APP_PROXY_ALLOWED_NETWORKS) at the moment of connecting.

A registration names a host; what matters is the address the proxy connects to. A name checked once and resolved
again later could point elsewhere by then (DNS rebinding), so the check sits where the name becomes an address: in
the resolver the pooled client connects through (``CheckedResolver``), which hands the connector only addresses that
passed. An IP literal never goes through a resolver (aiohttp connects to it as written), so it is checked on its own
(``check_literal``) before any connection is opened; WebSockets resolve through the same resolver
(``connect_address``).

Without APP_PROXY_ALLOWED_NETWORKS any address is allowed except link-local ones (169.254.0.0/16, fe80::/10), where
clouds answer with instance credentials. The metadata addresses themselves are refused whatever the setting says:
no worker is ever served there.
"""

import ipaddress
import socket

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from django.conf import settings

SETTING = "APP_PROXY_ALLOWED_NETWORKS"
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# AWS, GCP, Azure, OpenStack and others answer at 169.254.169.254; AWS also at fd00:ec2::254 (IPv6, Nitro).
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# IPv6 addresses that reach an IPv4 address: the IPv4 one is what is checked.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
FROM_SETTINGS = object()


class RefusedTarget(OSError):
    """An environment's address is not an allowed proxy target. An OSError, as resolvers' failures are, so that
    aiohttp hands it on (wrapped in a ClientConnectorError, as ``os_error``) without trying to connect."""

    def __init__(self, host, reason):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


def allowed_networks():
    """The operator's networks (a tuple of ip_network), or None for the default policy."""
    return getattr(settings, SETTING, None)


def _address(text):
    """The ip_address TEXT names, the IPv4 one for an IPv4-mapped or NAT64 IPv6 address; None if not an address."""
    try:
        address = ipaddress.ip_address(str(text).split("%", 1)[0])  # less an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address, networks=FROM_SETTINGS):
    """Why ADDRESS (an IP address, as text or ip_address) is not an allowed target, or None when it is.
    NETWORKS: the allowed ones (None: the default policy); unless given, APP_PROXY_ALLOWED_NETWORKS."""
    if networks is FROM_SETTINGS:
        networks = allowed_networks()
    ip = _address(address)
    if ip is None:
        return f"{address!r} is not an IP address"
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if networks is None:
        if any(ip in network for network in LINK_LOCAL):
            return f"{ip} is a link-local address (set {SETTING} to allow it)"
        return None
    if not any(ip.version == network.version and ip in network for network in networks):
        return f"{ip} is outside {SETTING} ({', '.join(str(n) for n in networks)})"
    return None


def is_literal(host):
    return _address((host or "").strip("[]")) is not None


def check_literal(host):
    """Raise RefusedTarget when HOST is an IP address that is not an allowed target (names are checked once
    resolved, by CheckedResolver)."""
    host = (host or "").strip("[]")
    if is_literal(host):
        reason = refusal(host)
        if reason:
            raise RefusedTarget(host, reason)


def checked(host, results):
    """The resolver RESULTS (aiohttp ResolveResult dicts) whose address is allowed; RefusedTarget when none is."""
    allowed, reasons = [], []
    for result in results:
        reason = refusal(result["host"])
        if reason is None:
            allowed.append(result)
        else:
            reasons.append(reason)
    if not allowed and reasons:
        raise RefusedTarget(host, f"{host} resolves only to refused addresses ({'; '.join(dict.fromkeys(reasons))})")
    return allowed


class CheckedResolver(AbstractResolver):
    """aiohttp's default resolver, answering only addresses the policy allows: the connector connects to nothing
    else, whatever the name resolves to at that moment."""

    def __init__(self, resolver=None):
        self._resolver = resolver if resolver is not None else DefaultResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return checked(host, await self._resolver.resolve(host, port, family))

    async def close(self):
        await self._resolver.close()


async def connect_address(host, port, resolver=None):
    """An allowed address to connect to for HOST:PORT (RefusedTarget if there is none), for clients that cannot
    take a resolver (websockets): connecting to the checked address leaves no second lookup to rebind."""
    host = (host or "").strip("[]")
    if is_literal(host):
        check_literal(host)
        return host
    resolver = resolver if resolver is not None else CheckedResolver()
    try:
        results = await resolver.resolve(host, port, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    if not results:
        raise OSError(f"{host} resolves to no address")
    return results[0]["host"]
