"""The supervisor-agent messages and the tunnel's numbers, without sockets."""

from __future__ import annotations

import pytest

from pytest_netplayground.core import agent_protocol as proto
from pytest_netplayground.errors import ConfigError
from pytest_netplayground.settings import merge


def test_a_message_carries_its_fields_and_raw_bytes_unchanged():
    payload = bytes(range(256)) + b"\n{not json}\n"
    fields, got = proto.decode(proto.encode("output", payload, id=7, stream="stdout"))
    assert fields == {"op": "output", "id": 7, "stream": "stdout"}
    assert got == payload


@pytest.mark.parametrize("message", [b"", b"no header line", b"[1, 2]\n", b'{"id": 1}\n', b"\xff\n"])
def test_what_is_not_a_message_is_refused(message):
    with pytest.raises(ValueError):
        proto.decode(message)


def test_a_remote_tun_fits_a_sealed_packet_in_one_datagram_of_the_path():
    assert proto.tun_mtu(1500, 40) == 1500 - 20 - 8 - 40
    assert proto.tun_mtu(1500, 40, ipv6=True) == 1500 - 40 - 8 - 40
    assert proto.tun_mtu(65535, 40) == 65535 - 68


def test_a_path_too_small_for_ipv6_hosts_is_a_clear_error():
    with pytest.raises(ConfigError, match="raise the MTU of the link"):
        proto.tun_mtu(1300, 40)


def test_agents_parse_from_a_mapping_or_the_command_lines_pairs():
    by_dict = proto.parse_agents({"b": "192.0.2.2:50000", "gpu": "[2001:db8::2]:7"})
    by_list = proto.parse_agents(["b=192.0.2.2:50000", "gpu=[2001:db8::2]:7"])
    assert by_dict == by_list
    assert by_dict["gpu"].host == "2001:db8::2" and by_dict["gpu"].ipv6
    assert str(by_dict["b"]) == "b (192.0.2.2:50000)"
    assert by_dict["gpu"].text == "[2001:db8::2]:7"


@pytest.mark.parametrize(
    "value, message",
    [
        (["b"], "use NAME=ADDR:PORT"),
        (["b=192.0.2.2:1", "b=192.0.2.3:1"], "given twice"),
        ({"b": "example.com:50000"}, "not ADDR:PORT"),
        ({"b": "192.0.2.2"}, "not ADDR:PORT"),
        ({"b": "192.0.2.2:0"}, "port"),
        ({"2b": "192.0.2.2:1"}, "agent name"),
    ],
)
def test_bad_agents_are_refused_naming_the_value(value, message):
    with pytest.raises(ConfigError, match=message):
        proto.parse_agents(value)


def test_placements_map_command_numbers_to_agents():
    agents = proto.parse_agents(["b=192.0.2.2:50000"])
    assert proto.parse_placements(["2=b"], 2, agents) == {1: "b"}
    with pytest.raises(ConfigError, match="there are 2 commands"):
        proto.parse_placements(["3=b"], 2, agents)
    with pytest.raises(ConfigError, match="no agent 'c'"):
        proto.parse_placements(["1=c"], 2, agents)
    with pytest.raises(ConfigError, match="INDEX=AGENT"):
        proto.parse_placements(["b"], 2, agents)


def test_the_settings_take_agents_and_a_key_file_through_their_one_path():
    settings = merge([("marker", {"agents": {"b": "192.0.2.2:50000"}, "key_file": "k"})])
    assert settings.agents == (("b", "192.0.2.2:50000"),)
    assert settings.key_file == "k"
    with pytest.raises(ConfigError, match="marker: bad value for 'agents'"):
        merge([("marker", {"agents": {"b": "nowhere"}})])


def test_tunnel_mtu_is_none_or_a_packet_size_a_host_can_use():
    from pytest_netplayground.core.agent_protocol import tun_mtu, tunnel_mtu
    from pytest_netplayground.errors import ConfigError

    assert tunnel_mtu(None) is None
    assert tunnel_mtu("9000") == tunnel_mtu(9000) == 9000
    assert tun_mtu(tunnel_mtu(65535), 40) == 65535 - 28 - 40
    for bad in ("jumbo", 1000, 70000, True, 9000.5):
        with pytest.raises(ConfigError, match="tunnel_mtu"):
            tunnel_mtu(bad)
