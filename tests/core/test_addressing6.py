"""The IPv6 prefix beside the IPv4 subnet: derived the same way every run, or given and validated."""

from __future__ import annotations

import ipaddress

import pytest

from pytest_netplayground import ConfigError, Sandbox
from pytest_netplayground.core.addressing6 import Subnet6, default_subnet6


def test_the_default_prefix_is_a_unique_local_64_derived_from_the_ipv4_subnet():
    first = default_subnet6("10.0.0.0/24")
    assert first == default_subnet6("10.0.0.0/24")
    assert first.network.prefixlen == 64 and first.unique_local
    assert str(first).startswith("fd")
    assert default_subnet6("10.9.0.0/24") != first


def test_hosts_get_the_same_index_as_their_ipv4_address():
    subnet6 = Subnet6.parse("fd00:1::/64")
    assert [subnet6.host_address(i) for i in range(3)] == ["fd00:1::1", "fd00:1::2", "fd00:1::3"]


def test_parse_without_a_value_derives_from_the_subnet():
    assert Subnet6.parse(None, "10.1.2.0/24") == default_subnet6("10.1.2.0/24")


@pytest.mark.parametrize(
    "value, words",
    [
        ("fd00::1/64", "did you mean 'fd00::/64'"),
        ("fd00::", "prefix length"),
        ("10.0.0.0/24", "IPv6 network"),
        ("fd00::/121", "too small"),
        ("fd00::/32", "too large"),
        ("fe80::/64", "link-local"),
        ("ff02::/64", "multicast"),
        ("::/96", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        (64, "must be a string"),
    ],
)
def test_bad_prefixes_are_config_errors_naming_the_value(value, words):
    with pytest.raises(ConfigError, match=words) as info:
        Subnet6.parse(value)
    assert str(value) in str(info.value)


def test_a_full_prefix_is_a_config_error():
    subnet6 = Subnet6.parse("fd00::/120")
    assert subnet6.host_address(254) == "fd00::ff"
    with pytest.raises(ConfigError, match="no room"):
        subnet6.host_address(255)


def test_sandbox_validates_subnet6_before_starting_anything():
    with pytest.raises(ConfigError, match="subnet6"):
        Sandbox(subnet6="fd00::1/64")
    sb = Sandbox(subnet="10.5.0.0/24", subnet6=ipaddress.IPv6Network("fd00:5::/64"))
    assert str(sb.subnet6) == "fd00:5::/64"
    assert Sandbox(subnet="10.5.0.0/24").subnet6 == default_subnet6("10.5.0.0/24")


# -- endpoints, flow keys and aliases of either family --------------------------

from pytest_netplayground.core.addressing import (  # noqa: E402
    AddressPlan,
    ConnectionKey,
    Endpoint,
    decode_key,
    encode_key,
    key_client,
    key_server,
    reverse_key,
)


def test_an_ipv6_endpoint_is_canonical_and_written_in_brackets():
    endpoint = Endpoint("FD00:1:0::0002", 80)
    assert (endpoint.host, str(endpoint)) == ("fd00:1::2", "[fd00:1::2]:80")
    assert str(ConnectionKey("fd00:1::2", "fd00:1::1", 80)) == "fd00:1::2 -> [fd00:1::1]:80"


@pytest.mark.parametrize(
    "client, server",
    [(Endpoint("10.0.0.2", 40000), Endpoint("10.0.0.1", 80)), (Endpoint("fd00::2", 40000), Endpoint("fd00::1", 80))],
    ids=["ipv4", "ipv6"],
)
def test_flow_keys_round_trip_and_reverse_in_either_family(client, server):
    key = encode_key(client, server)
    assert len(key) == (12 if "." in client.host else 36)
    assert decode_key(key) == (client, server)
    assert decode_key(reverse_key(key)) == (server, client)
    assert (key_client(key), key_server(key)) == (
        ipaddress.ip_address(client.host).packed,
        ipaddress.ip_address(server.host).packed,
    )


def test_an_ipv6_alias_is_the_inverse_and_lies_in_the_prefixs_alias_range():
    plan = AddressPlan("10.0.0.0/24")
    subnet6 = Subnet6.parse("fd00:1::/64")
    alias = plan.alias("fd00:1::1")
    assert plan.unalias(alias) == "fd00:1::1"
    assert ipaddress.IPv6Address(alias) in subnet6.alias_network
    assert not subnet6.network.overlaps(subnet6.alias_network)


def test_a_prefix_whose_alias_range_would_be_multicast_is_refused():
    with pytest.raises(ConfigError, match=r"alias range .* overlaps the multicast range"):
        Subnet6.parse("00ff:1::/64")
