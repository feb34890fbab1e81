"""SSRF guard: a long table of hostile URLs, address classification, allow-lists, and DNS pinning."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgym.errors import BlockedURLError, FetchError
from drgym.web.fetch import Fetcher
from drgym.web.ssrf import PinnedResolver, SSRFGuard, blocked_reason, parse_numeric_host

HOSTILE = [
    # loopback in every spelling
    ("http://127.0.0.1/", "a loopback address 127.0.0.1"),
    ("http://127.0.0.1:80/admin", "a loopback address 127.0.0.1"),
    ("http://127.1/", "a loopback address 127.0.0.1"),
    ("http://127.0.1/", "a loopback address 127.0.0.1"),
    ("http://0x7f.1/", "a loopback address 127.0.0.1"),
    ("http://0x7f000001/", "a loopback address 127.0.0.1"),
    ("http://0X7F.0X0.0X0.0X1/", "a loopback address 127.0.0.1"),
    ("http://2130706433/", "a loopback address 127.0.0.1"),
    ("http://017700000001/", "a loopback address 127.0.0.1"),
    ("http://0177.0.0.1/", "a loopback address 127.0.0.1"),
    ("http://127.000.000.001/", "a loopback address 127.0.0.1"),
    ("http://127.0.0.1./", "a loopback address 127.0.0.1"),
    ("http://127.255.255.254/", "a loopback address 127.255.255.254"),
    ("http://[::1]/", "a loopback address ::1"),
    ("http://[0:0:0:0:0:0:0:1]/", "a loopback address ::1"),
    # unspecified / this network / broadcast
    ("http://0/", "the unspecified address 0.0.0.0"),
    ("http://0.0.0.0/", "the unspecified address 0.0.0.0"),
    ("http://0.1.2.3/", "a 'this network' address 0.1.2.3"),
    ("http://[::]/", "the unspecified address ::"),
    ("http://255.255.255.255/", "a broadcast address 255.255.255.255"),
    # private networks
    ("http://10.0.0.1/", "a private address 10.0.0.1"),
    ("http://10.255.255.255/", "a private address 10.255.255.255"),
    ("http://012.0.0.1/", "a private address 10.0.0.1"),
    ("http://167772161/", "a private address 10.0.0.1"),
    ("http://172.16.0.1/", "a private address 172.16.0.1"),
    ("http://172.31.255.255/", "a private address 172.31.255.255"),
    ("http://192.168.0.1/", "a private address 192.168.0.1"),
    ("http://0xc0.0xa8.1.1/", "a private address 192.168.1.1"),
    # link-local and the cloud metadata endpoint
    ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address 169.254.169.254"),
    ("http://0xa9fea9fe/", "the cloud metadata address 169.254.169.254"),
    ("http://2852039166/", "the cloud metadata address 169.254.169.254"),
    ("http://169.254.0.1/", "a link-local address 169.254.0.1"),
    ("http://[fe80::1]/", "a link-local address fe80::1"),
    ("http://[fe80::1%25eth0]/", "a link-local address"),
    # carrier-grade NAT, multicast, reserved and special-purpose ranges
    ("http://100.64.0.1/", "a carrier-grade NAT (shared) address 100.64.0.1"),
    ("http://100.127.255.255/", "a carrier-grade NAT (shared) address 100.127.255.255"),
    ("http://224.0.0.1/", "a multicast address 224.0.0.1"),
    ("http://239.255.255.250/", "a multicast address 239.255.255.250"),
    ("http://240.0.0.1/", "a reserved address 240.0.0.1"),
    ("http://192.0.2.1/", "a documentation address 192.0.2.1"),
    ("http://198.18.0.1/", "a benchmarking address 198.18.0.1"),
    ("http://192.0.0.170/", "an IETF protocol-assignment address 192.0.0.170"),
    ("http://[ff02::1]/", "a multicast address ff02::1"),
    ("http://[2001:db8::1]/", "a documentation address 2001:db8::1"),
    ("http://[2001::1]/", "an IETF protocol-assignment address (Teredo and others)"),
    ("http://[fec0::1]/", "a site-local address fec0::1"),
    ("http://[100::1]/", "a discard-only address 100::1"),
    ("http://[4000::1]/", "a reserved IPv6 address 4000::1"),
    # IPv6 unique-local
    ("http://[fc00::1]/", "a unique-local (private) address fc00::1"),
    ("http://[fd12:3456:789a::1]/", "a unique-local (private) address fd12:3456:789a::1"),
    # IPv4 embedded in IPv6: mapped, compatible, 6to4, NAT64
    ("http://[::ffff:127.0.0.1]/", "a loopback address 127.0.0.1 embedded in IPv6 ::ffff:7f00:1"),
    ("http://[::ffff:7f00:1]/", "a loopback address 127.0.0.1 embedded in IPv6"),
    ("http://[::ffff:169.254.169.254]/", "the cloud metadata address 169.254.169.254 embedded in IPv6"),
    ("http://[::ffff:10.0.0.1]/", "a private address 10.0.0.1 embedded in IPv6"),
    ("http://[0:0:0:0:0:ffff:192.168.0.1]/", "a private address 192.168.0.1 embedded in IPv6"),
    ("http://[::127.0.0.1]/", "a loopback address 127.0.0.1 embedded in IPv6"),
    ("http://[::10.0.0.1]/", "a private address 10.0.0.1 embedded in IPv6"),
    ("http://[2002:7f00:1::]/", "a loopback address 127.0.0.1 embedded in IPv6"),
    ("http://[2002:a9fe:a9fe::1]/", "the cloud metadata address 169.254.169.254 embedded in IPv6"),
    ("http://[64:ff9b::169.254.169.254]/", "the cloud metadata address 169.254.169.254 embedded in IPv6"),
    ("http://[64:ff9b::7f00:1]/", "a loopback address 127.0.0.1 embedded in IPv6"),
    ("http://[64:ff9b:1::a00:1]/", "a local-use NAT64 address"),
    # credentials in the authority
    ("http://evil@127.0.0.1/", "URL carries credentials"),
    ("http://user:pass@example.com/", "URL carries credentials"),
    ("http://example.com@127.0.0.1/", "URL carries credentials"),
    ("http://127.0.0.1@example.com/", "URL carries credentials"),
    ("http://:@example.com/", "URL carries credentials"),
    # schemes
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("FILE://localhost/etc/passwd", "scheme 'file' is not allowed"),
    ("ftp://example.com/file", "scheme 'ftp' is not allowed"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher' is not allowed"),
    ("dict://127.0.0.1:11211/stats", "scheme 'dict' is not allowed"),
    ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ("data:text/html,<script>alert(1)</script>", "scheme 'data' is not allowed"),
    ("ws://example.com/socket", "scheme 'ws' is not allowed"),
    ("//example.com/no-scheme", "scheme '(none)' is not allowed"),
    ("example.com/relative", "scheme '(none)' is not allowed"),
    ("", "scheme '(none)' is not allowed"),
    # malformed hosts
    ("http://exa mple.com/", "whitespace or control characters"),
    ("http://example.com/\r\nHost: evil", "whitespace or control characters"),
    ("http://127.0.0.%31/", "is not a valid host name"),
    ("http://example.com\\@127.0.0.1/", "malformed URL"),
    ("http:///only-a-path", "URL has no host"),
    ("http://a..b/", "is not a valid host name"),
    ("http://-leading.example/", "is not a valid host name"),
    ("http://1.2.3.4.5/", "out-of-range numeric IPv4 address"),
    ("http://256.0.0.1/", "out-of-range numeric IPv4 address"),
    ("http://0x100000000/", "out-of-range numeric IPv4 address"),
    ("http://08.0.0.1/", "invalid octal part '08'"),
    ("http://example.123/", "ends in a number but is not a valid IPv4 address"),
    ("http://example.com:99999/", "malformed URL"),
    # ports
    ("http://example.com:22/", "port 22 is not allowed (allowed: 80, 443, 8080, 8443)"),
    ("http://8.8.8.8:6379/", "port 6379 is not allowed"),
    ("https://[2606:4700::1]:25/", "port 25 is not allowed"),
    # length
    ("http://example.com/" + "a" * 3000, "URL is 3019 characters long; the limit is 2048"),
]

PUBLIC = [
    ("http://8.8.8.8/", "http://8.8.8.8/"),
    ("https://1.1.1.1/dns-query", "https://1.1.1.1/dns-query"),
    ("http://134744072/", "http://8.8.8.8/"),
    ("http://0x8.0x8.0x8.0x8/", "http://8.8.8.8/"),
    ("http://[2606:4700:4700::1111]/", "http://[2606:4700:4700::1111]/"),
    ("http://[::ffff:8.8.8.8]/", "http://[::ffff:808:808]/"),
    ("https://en.wikipedia.org/wiki/Deep_learning#History", "https://en.wikipedia.org/wiki/Deep_learning"),
    ("HTTPS://EN.Wikipedia.ORG/wiki/X", "https://en.wikipedia.org/wiki/X"),
    ("http://example.com:8080/page?q=1", "http://example.com:8080/page?q=1"),
    ("http://bücher.example/", "http://xn--bcher-kva.example/"),
    ("http://under_score.example.com/", "http://under_score.example.com/"),
    ("http://example.com./", "http://example.com./"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE, ids=[u[:60] for u, _ in HOSTILE])
async def test_hostile_urls_are_refused_with_a_reason(url, reason):
    guard = SSRFGuard()
    with pytest.raises(BlockedURLError, match=re.escape(reason)):
        guard.check_url(url)
    with pytest.raises(BlockedURLError, match=re.escape(reason)):
        await guard.check(url)


@pytest.mark.parametrize(("url", "canonical"), PUBLIC)
def test_public_urls_pass_and_are_canonicalised(url, canonical):
    assert str(SSRFGuard().check_url(url)) == canonical


async def test_public_ip_literals_pass_the_full_check_without_dns():
    checked = await SSRFGuard().check("http://134744072/path")
    assert str(checked.url) == "http://8.8.8.8/path"
    assert checked.addresses == (ipaddress.ip_address("8.8.8.8"),)


async def test_hostname_resolving_to_loopback_is_refused():
    message = "host localhost resolves to a loopback address 127.0.0.1"
    with pytest.raises(BlockedURLError, match=re.escape(message)):
        await SSRFGuard().check("http://localhost/")


async def test_fetcher_refuses_a_name_resolving_to_loopback(web_server, fetch_config):
    url = web_server.url("/chain/0").replace("127.0.0.1", "localhost")
    async with Fetcher(fetch_config(allow_hosts=frozenset(), allowed_ports=None)) as fetcher:
        with pytest.raises(BlockedURLError, match="host localhost resolves to a loopback address 127.0.0.1"):
            await fetcher.fetch(url)
    assert web_server.log.hits == {}


async def test_unresolvable_host_is_a_fetch_error_not_a_block():
    with pytest.raises(FetchError, match="could not resolve host 'no-such-host.invalid'") as info:
        await SSRFGuard().check("http://no-such-host.invalid/")
    assert not isinstance(info.value, BlockedURLError)


def test_messages_are_one_line_reasons():
    guard = SSRFGuard()
    with pytest.raises(BlockedURLError) as info:
        guard.check_url("http://10.0.0.1/")
    assert str(info.value) == "host 10.0.0.1 is a private address 10.0.0.1"


# ----------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("93.184.216.34", None),
        ("2606:4700::1", None),
        ("2a00:1450:4001:81b::200e", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::1", None),  # 6to4 of a public address
        ("127.0.0.1", "a loopback address"),
        ("172.20.1.1", "a private address"),
        ("169.254.169.254", "the cloud metadata address"),
        ("100.100.100.100", "a carrier-grade NAT (shared) address"),
        ("::ffff:169.254.169.254", "the cloud metadata address 169.254.169.254 embedded in IPv6"),
        ("fdff::1", "a unique-local (private) address"),
        ("fe80::abcd", "a link-local address"),
    ],
)
def test_blocked_reason(address, expected):
    assert blocked_reason(ipaddress.ip_address(address)) == expected


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("1.2.3.4.", "1.2.3.4"),
        ("::1", "::1"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_parse_numeric_host(host, address):
    parsed = parse_numeric_host(host)
    assert (None if parsed is None else str(parsed)) == address


_BLOCKED_V4 = [
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
]


def _spell(value: int, style: int) -> str:
    octets = value.to_bytes(4, "big")
    if style == 0:
        return str(value)
    if style == 1:
        return hex(value)
    if style == 2:
        return "0" + oct(value)[2:]
    if style == 3:
        return ".".join(hex(o) for o in octets)
    if style == 4:
        return ".".join("0" + oct(o)[2:] for o in octets)
    return f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}"


@settings(max_examples=300, deadline=None)
@given(
    net=st.sampled_from(_BLOCKED_V4),
    offset=st.integers(min_value=0, max_value=2**24 - 1),
    style=st.integers(min_value=0, max_value=5),
)
def test_every_spelling_of_a_blocked_ipv4_is_refused(net, offset, style):
    network = ipaddress.IPv4Network(net)
    address = network[offset % network.num_addresses]
    host = _spell(int(address), style)
    with pytest.raises(BlockedURLError, match=re.escape(f" {address}")):
        SSRFGuard().check_url(f"http://{host}/")
    with pytest.raises(BlockedURLError, match=re.escape(f"{address} embedded in IPv6")):
        SSRFGuard().check_url(f"http://[::ffff:{address}]/")


# --------------------------------------------------------------------------------------------- allow-lists


def test_allow_list_of_an_address_admits_it_on_any_port():
    guard = SSRFGuard({"127.0.0.1"})
    assert str(guard.check_url("http://127.0.0.1:8123/x")) == "http://127.0.0.1:8123/x"
    assert str(guard.check_url("http://0x7f.1:8123/x")) == "http://127.0.0.1:8123/x"
    with pytest.raises(BlockedURLError, match="a loopback address 127.0.0.2"):
        guard.check_url("http://127.0.0.2/")


def test_allow_list_of_a_network():
    guard = SSRFGuard({"10.1.0.0/16"})
    assert guard.check_url("http://10.1.2.3:9000/").host == "10.1.2.3"
    with pytest.raises(BlockedURLError, match="a private address 10.2.0.1"):
        guard.check_url("http://10.2.0.1/")


async def test_allow_list_of_a_name_skips_resolution():
    guard = SSRFGuard({"LocalHost."})
    checked = await guard.check("http://localhost:1234/")
    assert checked.addresses == ()


def test_allow_private_keeps_scheme_and_credential_checks():
    guard = SSRFGuard(allow_private=True)
    assert guard.check_url("http://192.168.1.1/").host == "192.168.1.1"
    with pytest.raises(BlockedURLError, match="scheme 'file'"):
        guard.check_url("file:///etc/passwd")
    with pytest.raises(BlockedURLError, match="credentials"):
        guard.check_url("http://a:b@192.168.1.1/")


def test_any_port_when_ports_unrestricted():
    assert SSRFGuard(allowed_ports=None).check_url("http://example.com:6000/").port == 6000


# ------------------------------------------------------------------------------------------------ pinning


class _ScriptedDNS:
    """Stands in for the system resolver only: answers each lookup with the next scripted address."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        self.calls.append(host)
        address = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]


async def test_resolver_returns_only_checked_addresses(monkeypatch):
    dns = _ScriptedDNS(["127.0.0.1", "10.0.0.1"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    resolver = PinnedResolver(SSRFGuard({"127.0.0.1/32"}), pin_ttl_s=60)
    await resolver.check("http://rebind.test:8080/")
    results = await resolver.resolve("rebind.test", 8080, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["127.0.0.1"]
    assert dns.calls == ["rebind.test"]  # the connect used the pinned answer: no second lookup


async def test_dns_rebinding_between_check_and_connect_is_refused(web_server, fetch_config, monkeypatch):
    """First answer allowed, every later answer private: with the pin expired the connect-time lookup is
    checked again and refused, never used."""
    dns = _ScriptedDNS(["127.0.0.1", "10.0.0.1"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    async with Fetcher(fetch_config(allow_hosts=frozenset({"127.0.0.1/32"}), allowed_ports=None)) as fetcher:
        state = fetcher._loop_state()
        state.resolver._ttl = 0.0  # pins expire at once, forcing a fresh lookup when connecting
        url = web_server.url("/chain/0").replace("127.0.0.1", "rebind.test")
        message = "host rebind.test resolves to a private address 10.0.0.1"
        with pytest.raises(BlockedURLError, match=re.escape(message)):
            await fetcher.fetch(url)
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert web_server.log.hits == {}


async def test_pinned_name_connects_to_the_checked_address(web_server, fetch_config, monkeypatch):
    dns = _ScriptedDNS(["127.0.0.1", "10.0.0.1"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    async with Fetcher(fetch_config(allow_hosts=frozenset({"127.0.0.1/32"}), allowed_ports=None)) as fetcher:
        page = await fetcher.fetch(web_server.url("/chain/0").replace("127.0.0.1", "rebind.test"))
    assert "end of chain" in page.text
    assert dns.calls == ["rebind.test"]
