"""SSRF guard: decide whether a policy-chosen URL may be fetched, and pin the connection to checked addresses.

A policy (or a page it read) chooses the URLs, so every URL is hostile until proven otherwise. The guard
refuses non-HTTP schemes, credentials in the authority, odd host syntax, legacy numeric IPv4 forms that
resolve to something other than what they look like (``http://0x7f.1/``), non-default ports, and any host
that resolves to a non-public address. *Every* address a name resolves to is checked, and the connection
goes only to those checked addresses: :class:`PinnedResolver` is the aiohttp resolver of the fetcher's
connector, so a DNS answer that changes between the check and the connect (DNS rebinding) is checked again
rather than trusted. Redirect hops go through the same check.

The only way around the guard is an explicit allow-list (``allow_hosts``: exact host names, IP addresses or
CIDR networks) or ``allow_private=True`` for trusted deployments.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from drgym.errors import BlockedURLError, FetchError

__all__ = [
    "DEFAULT_ALLOWED_PORTS",
    "CheckedURL",
    "IPAddress",
    "PinnedResolver",
    "SSRFGuard",
    "blocked_reason",
    "parse_numeric_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ALLOWED_PORTS: frozenset[int] = frozenset({80, 443, 8080, 8443})

# (network, reason) pairs; the first match names the reason. Ordered from specific to general.
_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("255.255.255.255/32", "a broadcast address"),
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.169.254/32", "the cloud metadata address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol-assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol-assignment address (Teredo and others)"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)

_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")

_HOSTNAME_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$")
_NUMERIC_PART_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 form carries (mapped, compatible, 6to4, NAT64), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or (addr in _V4_COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def blocked_reason(addr: IPAddress) -> str | None:
    """Say why ``addr`` must not be connected to, or return None for a public unicast address.

    IPv6 forms that embed an IPv4 address (``::ffff:a.b.c.d``, ``::a.b.c.d``, 6to4 ``2002::/16``, NAT64
    ``64:ff9b::/96``) are judged by the embedded address. Anything not explicitly public is refused: IPv6
    outside ``2000::/3`` and IPv4 that Python does not consider global.
    """
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
        for net, why in _V6_BLOCKED:
            if addr in net:
                return why
        inner = _embedded_ipv4(addr)
        if inner is not None:
            why = blocked_reason(inner)
            return None if why is None else f"{why} {inner} embedded in IPv6"
        if addr not in _V6_GLOBAL_UNICAST:
            return "a reserved IPv6 address"
        return None
    for net, why in _V4_BLOCKED:
        if addr in net:
            return why
    if not addr.is_global:
        return "an address that is not globally routable"
    return None


def parse_numeric_host(host: str) -> IPAddress | None:
    """Parse ``host`` as an IP address the way browsers and ``inet_aton`` do, or return None for a name.

    Accepts IPv6 literals and every legacy IPv4 spelling: 1 to 4 dot-separated parts, each decimal, octal
    (leading ``0``) or hex (``0x``), the last part filling the remaining bytes (``127.1``, ``2130706433``,
    ``0x7f.1``, ``017700000001``). A host whose last label is numeric but is not a valid address raises
    :class:`BlockedURLError`, as the WHATWG URL standard refuses it.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise BlockedURLError(f"malformed IPv6 host {host!r}") from exc
    name = host.removesuffix(".")
    parts = name.split(".")
    if not parts or not _NUMERIC_PART_RE.match(parts[-1]):
        return None
    values: list[int] = []
    for part in parts:
        if not _NUMERIC_PART_RE.match(part):
            raise BlockedURLError(f"host {host!r} ends in a number but is not a valid IPv4 address")
        if part.startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                raise BlockedURLError(f"host {host!r} has an invalid octal part {part!r}")
            values.append(int(part, 8))
        else:
            values.append(int(part))
    if len(values) > 4 or any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise BlockedURLError(f"host {host!r} is an out-of-range numeric IPv4 address")
    number = values[-1]
    for i, value in enumerate(values[:-1]):
        number |= value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _parse_allow_entry(entry: str) -> str | _Network:
    """An allow-list entry is an IP address, a CIDR network, or an exact host name."""
    text = entry.strip().lower()
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        pass
    try:
        numeric = parse_numeric_host(text)
    except BlockedURLError:
        numeric = None
    if numeric is not None:
        return ipaddress.ip_network(numeric)
    return text.rstrip(".")


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the guard: the canonical URL and the addresses it may connect to.

    ``addresses`` is empty when the host was trusted by name through the allow-list and not resolved here.
    """

    url: URL
    addresses: tuple[IPAddress, ...]


class SSRFGuard:
    """Checks URLs and resolved addresses against the SSRF policy.

    Args:
        allow_hosts: Exact host names, IP addresses or CIDR networks that bypass the address and port checks
            (for example ``{"127.0.0.1"}`` for a loopback test server, or ``{"10.1.0.0/16"}``).
        allow_private: Turn the address checks off entirely (trusted networks only). Scheme, credential and
            syntax checks stay on.
        allowed_ports: Ports a non-allow-listed URL may use; ``None`` allows every port. The default admits
            80, 443, 8080 and 8443: public pages live there, and other ports are where internal services
            (databases, admin consoles) listen.
        max_url_length: Longest URL accepted, in characters.
    """

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        *,
        allow_private: bool = False,
        allowed_ports: Iterable[int] | None = DEFAULT_ALLOWED_PORTS,
        max_url_length: int = 2048,
    ) -> None:
        entries = [_parse_allow_entry(h) for h in allow_hosts]
        self._allowed_names = frozenset(e for e in entries if isinstance(e, str))
        self._allowed_networks = tuple(e for e in entries if not isinstance(e, str))
        self.allow_private = allow_private
        self.allowed_ports = None if allowed_ports is None else frozenset(allowed_ports)
        self.max_url_length = max_url_length

    def _address_allowed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self._allowed_networks)

    def check_address(self, addr: IPAddress) -> str | None:
        """Return why ``addr`` is refused under this policy, or None when it may be used."""
        if self.allow_private or self._address_allowed(addr):
            return None
        return blocked_reason(addr)

    def check_url(self, url: str | URL) -> URL:
        """Check everything that can be checked without DNS; return the canonical URL.

        Numeric hosts are rewritten to their canonical address (``http://0x7f.1/`` → ``http://127.0.0.1/``)
        so that what is checked is what aiohttp connects to. The fragment is dropped (it is never sent).

        Raises:
            BlockedURLError: The URL is malformed or refused; the message says why.
        """
        text = str(url)
        if len(text) > self.max_url_length:
            raise BlockedURLError(f"URL is {len(text)} characters long; the limit is {self.max_url_length}")
        if isinstance(url, str):
            if _CONTROL_RE.search(text.strip()):
                raise BlockedURLError(f"URL contains whitespace or control characters: {text[:200]!r}")
            try:
                parsed = URL(text.strip())
            except (ValueError, TypeError) as exc:
                raise BlockedURLError(f"malformed URL {text[:200]!r}: {exc}") from exc
        else:
            parsed = url
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            shown = scheme or "(none)"
            raise BlockedURLError(f"scheme {shown!r} is not allowed, only http and https: {text[:200]!r}")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise BlockedURLError(f"URL carries credentials (user info) in its authority: {text[:200]!r}")
        raw_host = parsed.raw_host
        if not raw_host:
            raise BlockedURLError(f"URL has no host: {text[:200]!r}")
        host = raw_host.lower()
        numeric = parse_numeric_host(host)
        if numeric is not None:
            host = str(numeric)
            parsed = parsed.with_host(host)
        elif not _HOSTNAME_RE.match(host) or len(host) > 253:
            raise BlockedURLError(f"host {raw_host!r} is not a valid host name")
        if numeric is not None:
            why = self.check_address(numeric)
            if why is not None:
                raise BlockedURLError(f"host {raw_host} is {why} {numeric}")
        self._check_port(parsed, host, numeric)
        return parsed.with_fragment(None)

    def _check_port(self, url: URL, host: str, numeric: IPAddress | None) -> None:
        port = url.port
        if self.allowed_ports is None or port in self.allowed_ports or self.host_trusted(host):
            return
        if numeric is not None and self._address_allowed(numeric):
            return
        allowed = ", ".join(str(p) for p in sorted(self.allowed_ports))
        raise BlockedURLError(f"port {port} is not allowed (allowed: {allowed}): {url.with_query(None)}")

    def host_trusted(self, host: str) -> bool:
        """Whether ``host`` is named exactly in the allow-list (such hosts skip every address check)."""
        return host.lower().rstrip(".") in self._allowed_names

    async def resolve(self, host: str, port: int = 0) -> list[tuple[IPAddress, socket.AddressFamily, int]]:
        """Resolve ``host`` and check every address; return ``(address, family, proto)`` triples.

        Raises:
            BlockedURLError: Any resolved address is refused (one bad address refuses the host: a client
                may pick any of them).
            FetchError: The name does not resolve.
        """
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(f"could not resolve host {host!r}: {exc}") from exc
        results: list[tuple[IPAddress, socket.AddressFamily, int]] = []
        for family, _, proto, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self.check_address(addr)
            if why is not None:
                raise BlockedURLError(f"host {host} resolves to {why} {addr}")
            if (addr, family, proto) not in results:
                results.append((addr, family, proto))
        if not results:
            raise FetchError(f"could not resolve host {host!r}: no IPv4 or IPv6 address")
        return results

    async def check(self, url: str | URL) -> CheckedURL:
        """Full check: :meth:`check_url`, then resolve a named host and check every address."""
        parsed = self.check_url(url)
        host = parsed.raw_host or ""
        if ":" in host or _is_dotted_quad(host):
            return CheckedURL(parsed, (ipaddress.ip_address(host),))
        if self.host_trusted(host):
            return CheckedURL(parsed, ())
        resolved = await self.resolve(host, parsed.port or 0)
        return CheckedURL(parsed, tuple(a for a, _, _ in resolved))


def _is_dotted_quad(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that only ever returns addresses the guard has checked.

    The fetcher checks a URL (resolving it) just before requesting it and pins the checked answer here for
    ``pin_ttl_s`` seconds, so the connection uses exactly those addresses without a second lookup. A host
    with no fresh pin is resolved and checked again, never passed through unchecked.
    """

    def __init__(self, guard: SSRFGuard, pin_ttl_s: float = 30.0, max_pins: int = 4096) -> None:
        self._guard = guard
        self._ttl = pin_ttl_s
        self._max_pins = max_pins
        self._pins: dict[str, tuple[float, list[tuple[IPAddress, socket.AddressFamily, int]]]] = {}

    def pin(self, host: str, resolved: list[tuple[IPAddress, socket.AddressFamily, int]]) -> None:
        """Remember checked addresses for ``host``."""
        if len(self._pins) >= self._max_pins:
            now = time.monotonic()
            self._pins = {h: p for h, p in self._pins.items() if p[0] > now}
            if len(self._pins) >= self._max_pins:
                self._pins.clear()
        self._pins[host.lower()] = (time.monotonic() + self._ttl, resolved)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = host.lower()
        pinned = self._pins.get(key)
        if pinned is not None and pinned[0] > time.monotonic():
            resolved = pinned[1]
        else:
            if self._guard.host_trusted(key):
                resolved = await self._resolve_trusted(host, port)
            else:
                resolved = await self._guard.resolve(host, port)
            self.pin(key, resolved)
        wanted = (socket.AF_INET, socket.AF_INET6) if family in (0, socket.AF_UNSPEC) else (family,)
        return [
            ResolveResult(
                hostname=host,
                host=str(addr),
                port=port,
                family=fam,
                proto=proto,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for addr, fam, proto in resolved
            if fam in wanted
        ]

    @staticmethod
    async def _resolve_trusted(host: str, port: int) -> list[tuple[IPAddress, socket.AddressFamily, int]]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise FetchError(f"could not resolve host {host!r}: {exc}") from exc
        return [
            (ipaddress.ip_address(str(sa[0]).split("%", 1)[0]), fam, proto)
            for fam, _, proto, _, sa in infos
            if fam in (socket.AF_INET, socket.AF_INET6)
        ]

    async def check(self, url: str | URL) -> URL:
        """Check ``url`` fully (see :meth:`SSRFGuard.check`) and pin the checked addresses for the connect."""
        parsed = self._guard.check_url(url)
        host = parsed.raw_host or ""
        if ":" in host or _is_dotted_quad(host) or self._guard.host_trusted(host):
            return parsed
        self.pin(host, await self._guard.resolve(host, parsed.port or 0))
        return parsed

    async def close(self) -> None:
        self._pins.clear()
