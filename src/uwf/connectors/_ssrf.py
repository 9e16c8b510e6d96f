"""The outbound network guard: UWF calls public HTTPS endpoints, not the network it runs in.

Connection base URLs, token URLs and URLs that CRM answers bring are all written by someone
other than the operator, so each is checked twice:

* before a request (`NetworkPolicy.check_url`): the scheme (https unless allowed) and any IP
  literal in the host, in every spelling `inet_aton` accepts (`2130706433`, `0x7f.1`, `127.1`,
  `0177.0.0.1`) and in IPv6 (`[::ffff:127.0.0.1]`, 6to4, NAT64);
* at connect time (`GuardedResolver`, the resolver of every outbound `TCPConnector`): every
  address a host name resolves to. The connection is made to exactly the addresses checked
  here, so a DNS answer that changes between a check and the connect (rebinding) cannot slip
  through.

Forbidden: anything not globally routable (loopback, RFC 1918, ULA, link-local including the
cloud metadata address 169.254.169.254, CGNAT 100.64/10, 0.0.0.0/8, documentation and
reserved ranges) and multicast. The deployment may allow hosts (`host`, `host:port`), IP
addresses and networks (CIDR) explicitly (`UWF_ALLOWED_HOSTS`), or switch the address check off
(`UWF_ALLOW_PRIVATE_NETWORKS`) for on-premises CRMs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from uwf.errors import FatalError

__all__ = [
    "GuardedResolver",
    "NetworkPolicy",
    "OutboundRefusedError",
    "forbidden_reason",
    "literal_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefusedError(FatalError):
    """UWF refused to connect: the address is internal, or the scheme is not allowed."""


def literal_ip(host: str) -> IPAddress | None:
    """The address `host` spells, in any notation a resolver would accept, else None."""
    host = host.strip("[]").rstrip(".")
    if not host or any(c.isspace() for c in host):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    # `inet_aton` reads the legacy forms (decimal, octal, hex, fewer than four parts) exactly
    # as the C resolver does, which is what makes them dangerous.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why UWF must not connect to `ip`, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (inside the IPv6 address {ip})" if inner else None
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is link-local (cloud metadata lives there)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return f"{ip} is carrier-grade NAT space (100.64.0.0/10)"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global or ip.is_reserved:
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True, slots=True)
class _HostEntry:
    host: str
    port: int | None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What outbound connections may reach.

    Example:
        policy = NetworkPolicy.parse("crm.internal:8443, 10.20.0.0/16")
        policy.check_url("https://crm.internal:8443/api")   # allowed
        policy.check_url("http://169.254.169.254/")         # raises OutboundRefusedError
    """

    hosts: tuple[_HostEntry, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    allow_private: bool = False
    allow_http: bool = False

    @classmethod
    def parse(
        cls,
        allowed: str | Iterable[str] = "",
        *,
        allow_private: bool = False,
        allow_http: bool = False,
    ) -> NetworkPolicy:
        """Entries: `host`, `host:port`, `[v6]:port`, an IP address or a CIDR network."""
        items = allowed.split(",") if isinstance(allowed, str) else list(allowed)
        hosts: list[_HostEntry] = []
        networks: list[IPNetwork] = []
        for raw in (i.strip() for i in items):
            if not raw:
                continue
            try:
                networks.append(ipaddress.ip_network(raw.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, port = _split_host_port(raw)
            hosts.append(_HostEntry(_normal_host(host), port))
        return cls(tuple(hosts), tuple(networks), allow_private, allow_http)

    def with_hosts(self, *entries: str) -> NetworkPolicy:
        """This policy, also allowing `entries` (e.g. the built-in sandboxes' own address)."""
        extra = NetworkPolicy.parse(entries)
        return NetworkPolicy(
            self.hosts + extra.hosts,
            self.networks + extra.networks,
            self.allow_private,
            self.allow_http,
        )

    def host_allowed(self, host: str, port: int | None) -> bool:
        """Listed by name (or literal address), with its port when the entry names one."""
        host = _normal_host(host)
        return any(e.host == host and (e.port is None or e.port == port) for e in self.hosts)

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def check_url(self, url: str) -> None:
        """Refuse a URL by its scheme and literal address, before anything is sent."""
        problem = self.url_problem(url)
        if problem is not None:
            raise OutboundRefusedError(problem)

    def url_problem(self, url: str) -> str | None:
        """What is wrong with `url` for this policy, in plain words, or None."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return f"refused to connect to {url!r}: not a valid URL ({exc})"
        host = parts.hostname or ""
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host:
            return f"refused to connect to {url!r}: only http(s) URLs with a host are allowed"
        port = port or (443 if scheme == "https" else 80)
        ip = literal_ip(host)
        # Listed by name, or a literal address inside a listed network: trusted, http too.
        listed = self.host_allowed(host, port) or (ip is not None and self.address_allowed(ip))
        # The address first: it is the graver problem, and https would not cure it.
        problem = (
            self.address_problem(_origin(parts), ip) if ip is not None and not listed else None
        )
        if problem is None and scheme == "http" and not (listed or self.allow_http):
            problem = (
                f"refused to connect to {_origin(parts)}: plain http is not allowed "
                "(use https, or list the host in UWF_ALLOWED_HOSTS)"
            )
        return problem

    def address_problem(self, what: str, ip: IPAddress) -> str | None:
        if self.allow_private or self.address_allowed(ip):
            return None
        reason = forbidden_reason(ip)
        if reason is None:
            return None
        return (
            f"refused to connect to {what}: {reason}; UWF only calls public addresses "
            "unless UWF_ALLOWED_HOSTS lists it"
        )


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses internal addresses.

    aiohttp connects to the addresses returned here and nowhere else, so the check holds at
    connect time, whatever DNS answers later.
    """

    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host, port):
            return results
        for result in results:
            ip = ipaddress.ip_address(str(result["host"]).split("%", 1)[0])
            problem = self._policy.address_problem(f"{host}:{port} (resolves to {ip})", ip)
            if problem is not None:
                raise OutboundRefusedError(problem)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _split_host_port(raw: str) -> tuple[str, int | None]:
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if raw.count(":") == 1:
        host, port = raw.split(":")
        return host, int(port)
    return raw, None


def _normal_host(host: str) -> str:
    host = host.strip("[]").rstrip(".").lower()
    ip = literal_ip(host)
    return str(ip) if ip is not None else host


def _origin(parts: Any) -> str:
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
