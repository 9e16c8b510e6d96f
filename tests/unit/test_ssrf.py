"""The outbound network guard against a corpus of internal addresses in every spelling."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwf.connectors import GuardedResolver, NetworkPolicy, OutboundRefusedError

STRICT = NetworkPolicy()

# Each of these reaches (or may reach) the machine UWF runs on or its private network.
FORBIDDEN_URLS = [
    "http://127.0.0.1/",
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/admin",
    "https://127.1/",
    "https://127.0.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0x7f.1/",
    "https://0x7f.0.0.1/",
    "https://0177.0.0.1/",
    "https://017700000001/",
    "https://127.0.0.1./",
    "https://user:pass@127.0.0.1/",
    "https://0.0.0.0/",
    "https://0/",
    "https://[::1]/",
    "https://[::]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[2002:7f00:1::]/",
    "https://[2002:a9fe:a9fe::1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://10.0.0.1/",
    "https://10.255.255.255/",
    "https://012.0.0.1/",
    "https://167772161/",
    "https://172.16.0.1/",
    "https://172.31.255.254/",
    "https://192.168.1.1/",
    "https://0xc0.0xa8.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://2852039166/",
    "https://0xa9fea9fe/",
    "https://0251.0376.0251.0376/",
    "https://169.254.1.1/",
    "https://100.64.0.1/",
    "https://100.127.255.254/",
    "https://224.0.0.1/",
    "https://239.255.255.250/",
    "https://255.255.255.255/",
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",
    "https://[fc00::1]/",
    "https://[fd12:3456:789a::1]/",
    "https://[ff02::1]/",
    "https://192.0.2.10/",
    "https://198.18.0.1/",
    "https://240.0.0.1/",
]

# Not allowed for a reason other than the address.
REFUSED_SCHEMES = [
    "http://crm.example.com/",
    "ftp://crm.example.com/",
    "file:///etc/passwd",
    "gopher://crm.example.com:70/",
    "https:///no-host",
]

PUBLIC_URLS = [
    "https://acme.zendesk.com/api/v2",
    "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
    "https://8.8.8.8/",
    "https://134744072/",  # 8.8.8.8 in decimal: odd, but public
    "https://[2606:4700:4700::1111]/",
    "https://[::ffff:8.8.8.8]/",
    "https://acme.my.salesforce.com:443/services",
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefusedError) as caught:
        STRICT.check_url(url)
    assert "refused to connect" in caught.value.message
    assert "pass" not in caught.value.message  # userinfo is never repeated


@pytest.mark.parametrize("url", REFUSED_SCHEMES)
def test_other_schemes_and_plain_http_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefusedError):
        STRICT.check_url(url)


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_https_urls_pass(url: str) -> None:
    STRICT.check_url(url)


def test_allowlist_by_host_port_cidr() -> None:
    policy = NetworkPolicy.parse("127.0.0.1:8080, crm.internal, 10.20.0.0/16")
    policy.check_url("http://127.0.0.1:8080/sandbox/zendesk")
    policy.check_url("http://crm.internal/api")
    policy.check_url("https://10.20.3.4/")
    with pytest.raises(OutboundRefusedError):
        policy.check_url("http://127.0.0.1:8081/")  # another port of the same host
    with pytest.raises(OutboundRefusedError):
        policy.check_url("https://10.21.0.1/")
    with pytest.raises(OutboundRefusedError):
        policy.check_url("https://169.254.169.254/")


def test_allow_private_networks_switches_the_address_check_off() -> None:
    policy = NetworkPolicy.parse("", allow_private=True)
    policy.check_url("https://10.0.0.5/")
    with pytest.raises(OutboundRefusedError):
        policy.check_url("http://10.0.0.5/")  # https is still required


_FORBIDDEN_NETS = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
]


@st.composite
def _forbidden_ipv4(draw: Any) -> ipaddress.IPv4Address:
    net = ipaddress.ip_network(draw(st.sampled_from(_FORBIDDEN_NETS)))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return ipaddress.IPv4Address(int(net.network_address) + offset)


def _spellings(ip: ipaddress.IPv4Address) -> list[str]:
    n = int(ip)
    a, b, c, d = ip.packed
    return [
        str(ip),
        str(n),
        hex(n),
        f"0{n:o}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"{hex(a)}.{hex(b)}.{hex(c)}.{hex(d)}",
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",
        f"[::ffff:{ip}]",
    ]


@settings(max_examples=300, deadline=None)
@given(_forbidden_ipv4(), st.data())
def test_any_spelling_of_a_forbidden_ipv4_is_refused(ip: ipaddress.IPv4Address, data: Any) -> None:
    host = data.draw(st.sampled_from(_spellings(ip)))
    with pytest.raises(OutboundRefusedError):
        STRICT.check_url(f"https://{host}/")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_ula_or_link_local_ipv6_is_refused(low: int) -> None:
    for prefix in ("fc00::", "fe80::"):
        ip = ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | low)
        with pytest.raises(OutboundRefusedError):
            STRICT.check_url(f"https://[{ip}]/")


class _FixedResolver:
    """A DNS that answers what the test says: a name that resolves to an internal address."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "addresses",
    [("127.0.0.1",), ("93.184.216.34", "10.0.0.7"), ("169.254.169.254",), ("::1",)],
)
async def test_a_name_resolving_to_an_internal_address_is_refused_at_connect(
    addresses: tuple[str, ...],
) -> None:
    resolver = GuardedResolver(STRICT, _FixedResolver(*addresses))  # type: ignore[arg-type]
    with pytest.raises(OutboundRefusedError) as caught:
        await resolver.resolve("rebind.example.com", 443)
    assert "rebind.example.com" in caught.value.message


async def test_a_public_answer_and_an_allowlisted_name_pass_at_connect() -> None:
    resolver = GuardedResolver(STRICT, _FixedResolver("93.184.216.34"))  # type: ignore[arg-type]
    assert [r["host"] for r in await resolver.resolve("crm.example.com", 443)] == ["93.184.216.34"]
    allowed = GuardedResolver(
        NetworkPolicy.parse("crm.internal:443"),
        _FixedResolver("10.1.2.3"),  # type: ignore[arg-type]
    )
    assert [r["host"] for r in await allowed.resolve("crm.internal", 443)] == ["10.1.2.3"]
