"""The import's packet filter language and its address map."""

from __future__ import annotations

import pytest

from pytest_netplayground.core.addressing import Endpoint, Subnet
from pytest_netplayground.core.addressing6 import Subnet6
from pytest_netplayground.core.capture_decode import TCP, UDP, CapturedPacket
from pytest_netplayground.core.capture_filter import parse_filter
from pytest_netplayground.core.capture_map import AddressMap, parse_mappings
from pytest_netplayground.core.events import ConnectionOpened, UdpFlow
from pytest_netplayground.errors import ConfigError

WEB = CapturedPacket(0.0, TCP, "192.0.2.5", 40000, "192.0.2.7", 80, b"")
DNS = CapturedPacket(0.0, UDP, "192.0.2.5", 5353, "198.51.100.1", 53, b"")
SSH6 = CapturedPacket(0.0, TCP, "2001:db8::5", 50000, "2001:db8::7", 22, b"")
ALL = (WEB, DNS, SSH6)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tcp", (WEB, SSH6)),
        ("udp", (DNS,)),
        ("tcp port 80", (WEB,)),
        ("port 53", (DNS,)),
        ("host 192.0.2.7", (WEB,)),
        ("host 192.0.2.5 and udp", (DNS,)),
        ("src host 192.0.2.5", (WEB, DNS)),
        ("dst host 192.0.2.5", ()),
        ("dst port 80 or dst port 22", (WEB, SSH6)),
        ("not port 22", (WEB, DNS)),
        ("ip6", (SSH6,)),
        ("ip and (port 53 or port 80)", (WEB, DNS)),
        ("net 2001:db8::/32", (SSH6,)),
        ("tcp src port 40000", (WEB,)),
        ("TCP PORT 80", (WEB,)),
    ],
)
def test_filters_select_packets_as_tcpdump_would(text, expected):
    predicate = parse_filter(text)
    assert tuple(p for p in ALL if predicate(p)) == expected


@pytest.mark.parametrize(
    "text, word",
    [
        ("tcp prot 80", "'prot'"),
        ("tcp port eighty", "'eighty'"),
        ("host 300.1.1.1", "'300.1.1.1'"),
        ("tcp and", "at the end"),
        ("(tcp", "at the end"),
        ("port 80 udp", "'udp'"),
        ("port 70000", "'70000'"),
        ("", "empty"),
    ],
)
def test_a_bad_filter_is_reported_naming_the_bad_word(text, word):
    with pytest.raises(ConfigError) as caught:
        parse_filter(text)
    assert word in str(caught.value)
    assert "bad filter" in str(caught.value)


SUBNET = Subnet.parse("10.0.0.0/24")
SUBNET6 = Subnet6.parse("fd00:1::/64")


def opened(client: str, server: str, port: int = 80) -> ConnectionOpened:
    return ConnectionOpened(0.0, 0, Endpoint(client, 40000), Endpoint(server, port))


def test_unmapped_addresses_get_hosts_in_order_servers_first():
    events = [
        opened("192.0.2.5", "192.0.2.7"),
        opened("192.0.2.6", "198.51.100.9", 443),
        UdpFlow(0.0, 0, Endpoint("192.0.2.5", 5353), Endpoint("198.51.100.1", 53)),
        opened("2001:db8::5", "2001:db8::7"),
    ]
    plan = AddressMap.build(SUBNET, SUBNET6, {}, events)
    assert plan.addresses == {
        "192.0.2.7": "10.0.0.1",
        "198.51.100.9": "10.0.0.2",
        "198.51.100.1": "10.0.0.3",
        "2001:db8::7": "fd00:1::4",
        "192.0.2.5": "10.0.0.5",
        "192.0.2.6": "10.0.0.6",
        "2001:db8::5": "fd00:1::7",
    }
    assert [h.address for h in plan.hosts()] == [f"10.0.0.{i}" for i in range(1, 8)]
    assert plan.hosts()[3].address6 == "fd00:1::4"
    assert plan.endpoint(Endpoint("192.0.2.7", 80)) == Endpoint("10.0.0.1", 80)


def test_given_mappings_are_kept_and_the_others_fill_the_free_hosts():
    given = parse_mappings(["192.0.2.7=10.0.0.3", "192.0.2.5 = 10.0.0.1"])
    plan = AddressMap.build(SUBNET, SUBNET6, given, [opened("192.0.2.5", "192.0.2.7"), opened("192.0.2.8", "192.0.2.9")])
    assert plan.addresses == {
        "192.0.2.7": "10.0.0.3",
        "192.0.2.5": "10.0.0.1",
        "192.0.2.9": "10.0.0.2",
        "192.0.2.8": "10.0.0.4",
    }
    assert plan.lines()[0] == "192.0.2.7 -> 10.0.0.3"


@pytest.mark.parametrize(
    "items, message",
    [
        (["192.0.2.7"], "write OLD=NEW"),
        (["192.0.2.7=10.0.0.x"], "'10.0.0.x' is not an IPv4 or IPv6 address"),
        (["bogus=10.0.0.1"], "'bogus'"),
        (["192.0.2.7=10.0.0.1", "192.0.2.7=10.0.0.2"], "already mapped"),
    ],
)
def test_a_bad_mapping_is_reported(items, message):
    with pytest.raises(ConfigError) as caught:
        parse_mappings(items)
    assert message in str(caught.value)


def test_a_mapping_outside_the_sandbox_subnet_is_refused():
    with pytest.raises(ConfigError) as caught:
        AddressMap.build(SUBNET, SUBNET6, parse_mappings(["192.0.2.7=10.9.0.1"]), [])
    assert "not in the sandbox's subnet 10.0.0.0/24" in str(caught.value)


def test_addresses_of_the_sandbox_plan_keep_their_hosts():
    events = [opened("10.0.0.2", "10.0.0.3"), opened("fd00:1::2", "192.0.2.7")]
    plan = AddressMap.build(SUBNET, SUBNET6, {}, events)
    assert plan.addresses == {
        "10.0.0.3": "10.0.0.3",
        "10.0.0.2": "10.0.0.2",
        "fd00:1::2": "fd00:1::2",
        "192.0.2.7": "10.0.0.1",
    }
