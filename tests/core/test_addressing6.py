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
