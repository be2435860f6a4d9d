"""proxy.networks: which addresses the access proxy may connect to (APP_PROXY_ALLOWED_NETWORKS), checked on the
addresses a name resolves to, and the registered URLs that can never be targets at all."""

import asyncio
import ipaddress
import socket

import pytest

from proxy import networks, targets

LOCAL = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.0/8", "fd00::/8"))


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "192.168.0.10", "8.8.8.8", "::1", "2001:db8::1",
                                     "169.253.255.255", "169.255.0.1"])
def test_by_default_any_address_is_allowed(address):
    assert networks.refusal(address, None) is None


@pytest.mark.parametrize("address", ["169.254.0.1", "169.254.10.20", "fe80::1", "fe80::1%eth0", "febf::1"])
def test_by_default_link_local_addresses_are_refused(address):
    assert "link-local" in networks.refusal(address, None)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254",
                                     "64:ff9b::a9fe:a9fe"])
@pytest.mark.parametrize("allowed", [None, LOCAL, (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))],
                         ids=["default", "local", "everything"])
def test_metadata_addresses_are_refused_whatever_is_allowed(address, allowed):
    assert "cloud metadata address" in networks.refusal(address, allowed)


@pytest.mark.parametrize("address", ["10.0.0.5", "127.0.0.1", "fd00::1", "::ffff:10.1.1.1"])
def test_addresses_inside_the_allowed_networks_are_allowed(address):
    assert networks.refusal(address, LOCAL) is None


@pytest.mark.parametrize("address", ["192.168.0.10", "8.8.8.8", "::1", "2001:db8::1", "169.254.0.1", "fe80::1"])
def test_addresses_outside_the_allowed_networks_are_refused_naming_the_setting(address):
    reason = networks.refusal(address, LOCAL)
    assert "outside APP_PROXY_ALLOWED_NETWORKS (10.0.0.0/8, 127.0.0.0/8, fd00::/8)" in reason


def test_an_explicitly_allowed_link_local_network_is_allowed(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = (ipaddress.ip_network("169.254.0.0/16"),)
    assert networks.refusal("169.254.3.4") is None
    assert networks.refusal("169.254.169.254") is not None


def test_the_policy_is_read_from_settings(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = LOCAL
    assert networks.refusal("10.9.9.9") is None and networks.refusal("192.168.1.1") is not None
    settings.APP_PROXY_ALLOWED_NETWORKS = None
    assert networks.refusal("192.168.1.1") is None


def test_ip_literals_are_checked_before_any_connection(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = None
    with pytest.raises(networks.RefusedTarget, match="cloud metadata address"):
        networks.check_literal("169.254.169.254")
    with pytest.raises(networks.RefusedTarget, match="cloud metadata address"):
        networks.check_literal("[fd00:ec2::254]")
    networks.check_literal("127.0.0.1")
    networks.check_literal("worker-a.internal")  # a name: checked once resolved


class FixedResolver:
    """Answers every name with ADDRESSES, as a DNS server under someone else's control might."""

    def __init__(self, *addresses):
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in self.addresses]

    async def close(self):
        self.closed = True


def resolve(resolver, host="worker-a.example", port=15000):
    return asyncio.run(networks.CheckedResolver(resolver).resolve(host, port, socket.AF_UNSPEC))


def test_a_name_resolving_to_a_refused_address_is_refused(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = None
    with pytest.raises(networks.RefusedTarget) as raised:
        resolve(FixedResolver("169.254.169.254"))
    assert raised.value.host == "worker-a.example"
    assert raised.value.reason == ("worker-a.example resolves only to refused addresses "
                                   "(169.254.169.254 is a cloud metadata address)")


def test_a_name_resolving_outside_the_allowed_networks_is_refused(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = LOCAL
    with pytest.raises(networks.RefusedTarget, match="outside APP_PROXY_ALLOWED_NETWORKS"):
        resolve(FixedResolver("192.168.7.7", "2001:db8::7"))


def test_only_the_allowed_addresses_of_a_name_are_handed_to_the_connector(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = LOCAL
    results = resolve(FixedResolver("169.254.169.254", "10.0.0.7", "192.168.7.7", "fd00::7"))
    assert [r["host"] for r in results] == ["10.0.0.7", "fd00::7"]


def test_a_real_name_is_checked_on_what_it_resolves_to(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(networks.RefusedTarget, match="127.0.0.1 is outside APP_PROXY_ALLOWED_NETWORKS"):
        asyncio.run(networks.connect_address("localhost", 80))
    settings.APP_PROXY_ALLOWED_NETWORKS = None
    assert asyncio.run(networks.connect_address("localhost", 80)) in ("127.0.0.1", "::1")


def test_a_websocket_connects_to_the_checked_address_not_the_name(settings):
    settings.APP_PROXY_ALLOWED_NETWORKS = LOCAL
    inner = FixedResolver("192.168.7.7", "10.0.0.7")
    address = asyncio.run(networks.connect_address("worker-a.example", 80, networks.CheckedResolver(inner)))
    assert address == "10.0.0.7" and inner.closed
    with pytest.raises(networks.RefusedTarget):
        asyncio.run(networks.connect_address("169.254.169.254", 80))


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "http://", "http:///apps/x",
                                 "ftp://worker-a:21", "gopher://127.0.0.1:6379/_FLUSHALL", "//worker-a:15000",
                                 "worker-a:15000", ""])
def test_a_registered_url_that_is_not_http_with_a_host_is_never_a_target(url):
    assert targets._registered_base({"url": url}) is None
    assert targets._registered_base({"url": url, "proxy_url": url}) is None


def test_a_bad_proxy_url_falls_back_to_the_registered_url():
    assert targets._registered_base({"proxy_url": "javascript:x", "url": "http://w:1/"}) == "http://w:1"
    assert targets._registered_base({"proxy_url": "https://w:2", "url": "http://w:1"}) == "https://w:2"
