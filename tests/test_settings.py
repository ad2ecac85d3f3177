"""Settings of a sandboxed test: merging layers, marker checks, cassette names, modes."""

from __future__ import annotations

import hashlib
import re

import pytest

from pytest_netplayground.errors import ConfigError
from pytest_netplayground.settings import (
    MARKER_KEYS,
    Settings,
    cassette_name,
    check_marker,
    merge,
    resolved_mode,
    safe_file_name,
)


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- merge --------------------------------------------------------------------------


def test_no_layers_give_the_defaults():
    assert merge([]) == Settings(
        mode="off",
        subnet="10.0.0.0/24",
        pace="causal",
        speed=1.0,
        strict=True,
        stall_timeout=5.0,
        cassette=None,
    )


def test_a_later_layer_wins_over_an_earlier_one():
    settings = merge([("ini", {"subnet": "10.1.0.0/24"}), ("command line", {"subnet": "10.2.0.0/24"})])
    assert settings.subnet == "10.2.0.0/24"


def test_none_in_a_later_layer_keeps_the_earlier_value():
    settings = merge([("ini", {"pace": "flood"}), ("command line", {"pace": None})])
    assert settings.pace == "flood"


def test_keys_missing_from_every_layer_keep_their_defaults():
    settings = merge([("ini", {"pace": "flood"})])
    assert settings.subnet == "10.0.0.0/24"
    assert settings.strict is True


def test_text_values_are_converted():
    settings = merge(
        [
            (
                "ini",
                {"mode": " Record ", "pace": "FLOOD", "speed": "2.5", "strict": "no", "stall_timeout": "0.5"},
            )
        ]
    )
    assert (settings.mode, settings.pace, settings.speed, settings.strict, settings.stall_timeout) == (
        "record",
        "flood",
        2.5,
        False,
        0.5,
    )


@pytest.mark.parametrize("text", ["1", "true", "YES", "on"])
def test_strict_accepts_the_usual_spellings_of_true(text):
    assert merge([("ini", {"strict": text})]).strict is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off"])
def test_strict_accepts_the_usual_spellings_of_false(text):
    assert merge([("ini", {"strict": text})]).strict is False


def test_bad_value_names_the_source_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError) as info:
        merge([("ini", {"pace": "fast"})])
    message = str(info.value)
    assert message.startswith("ini: ")
    assert "'pace'" in message and "'fast'" in message
    for allowed in ("causal", "recorded", "flood"):
        assert allowed in message


def test_unknown_key_names_the_source_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        merge([("netplay_config fixture", {"sped": 2})])
    message = str(info.value)
    assert message.startswith("netplay_config fixture: ")
    assert "'sped'" in message
    assert "speed" in message and "subnet" in message


@pytest.mark.parametrize("value", [0, -1, "nan", "quick"])
def test_speed_must_be_a_number_above_zero(value):
    with pytest.raises(ConfigError, match="'speed'"):
        merge([("marker", {"speed": value})])


def test_malformed_subnet_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="10.0.0.0/33"):
        merge([("command line", {"subnet": "10.0.0.0/33"})])


def test_subnet6_is_derived_unless_given_and_a_malformed_one_is_named():
    assert merge([]).subnet6 is None
    assert merge([("marker", {"subnet6": "fd00:2:0::/64"})]).subnet6 == "fd00:2::/64"
    with pytest.raises(ConfigError, match=r"marker: bad value for 'subnet6'.*'fd00::1'.*prefix length"):
        merge([("marker", {"subnet6": "fd00::1"})])


def test_strict_rejects_a_value_that_is_neither_true_nor_false():
    with pytest.raises(ConfigError, match="'maybe'"):
        merge([("ini", {"strict": "maybe"})])


def test_mode_rejects_an_unknown_mode_and_lists_the_modes():
    with pytest.raises(ConfigError) as info:
        merge([("command line", {"mode": "rewind"})])
    assert all(mode in str(info.value) for mode in ("off", "record", "replay", "once"))


def test_empty_cassette_name_is_rejected():
    with pytest.raises(ConfigError, match="'cassette'"):
        merge([("marker", {"cassette": "  "})])


# -- check_marker -------------------------------------------------------------------------


def test_marker_accepts_every_documented_keyword():
    check_marker(
        (),
        {
            "subnet": "10.9.0.0/24",
            "pace": "recorded",
            "speed": 3,
            "strict": False,
            "cassette": "x",
            "stall_timeout": 1,
        },
        "test_a.py::test_x",
    )


def test_marker_rejects_positional_arguments():
    with pytest.raises(ConfigError, match="keyword arguments only"):
        check_marker(("10.9.0.0/24",), {}, "test_a.py::test_x")


def test_marker_rejects_an_unknown_keyword_naming_the_test_and_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        check_marker((), {"spede": 2}, "test_a.py::test_x")
    message = str(info.value)
    assert message.startswith("test_a.py::test_x: ")
    assert "'spede'" in message
    assert all(key in message for key in MARKER_KEYS)


def test_mode_is_not_a_marker_keyword():
    with pytest.raises(ConfigError, match="unknown keyword 'mode'"):
        check_marker((), {"mode": "record"}, "test_a.py::test_x")


def test_marker_rejects_a_bad_value_naming_the_test():
    with pytest.raises(ConfigError) as info:
        check_marker((), {"pace": "fast"}, "test_a.py::test_x")
    assert str(info.value).startswith("test_a.py::test_x: @pytest.mark.netplay: bad value for 'pace'")


# -- safe_file_name ---------------------------------------------------------------------


def test_safe_name_is_kept_as_it_is():
    assert safe_file_name("Class.test_x=1+2-3") == "Class.test_x=1+2-3"


def test_parametrize_brackets_become_an_underscore():
    assert safe_file_name("test_x[a-1]") == "test_x_a-1"


def test_other_unsafe_characters_are_replaced_and_a_hash_of_the_name_added():
    assert safe_file_name("test_x[GET /a b]") == "test_x_GET_a_b-" + sha12("test_x[GET /a b]")


def test_names_differing_only_in_unsafe_characters_stay_apart():
    names = {safe_file_name(f"test_x[{id_}]") for id_ in ("a/b", "a:b", "a b", "a_b", "a_b_")}
    assert len(names) == 5


def test_result_never_starts_with_a_dot():
    assert not safe_file_name(".hidden").startswith(".")
    assert not safe_file_name("..").startswith(".")


def test_nothing_safe_left_still_gives_a_name():
    assert re.fullmatch(r"test-[0-9a-f]{12}", safe_file_name("///"))


def test_long_name_is_shortened_with_a_hash_of_the_whole_name():
    name = "test_x[" + "y" * 300 + "]"
    result = safe_file_name(name)
    assert len(result) <= 120
    assert result.startswith("test_x_yyyy")
    assert result.endswith("-" + sha12(name))


def test_long_names_sharing_a_prefix_get_different_files():
    prefix = "test_x[" + "y" * 300
    assert safe_file_name(prefix + "1]") != safe_file_name(prefix + "2]")


def test_max_length_is_respected():
    assert len(safe_file_name("z" * 50, max_length=20)) <= 20


# -- cassette_name ------------------------------------------------------------------------


def test_cassette_of_a_plain_test_is_its_name_with_the_suffix():
    assert cassette_name("test_x") == "test_x.netplay"


def test_cassette_of_a_test_in_a_class_is_prefixed_with_the_class():
    assert cassette_name("test_x", "TestThing") == "TestThing.test_x.netplay"


def test_cassette_of_a_parametrized_test_includes_the_id():
    assert cassette_name("test_x[3-b]", "TestThing") == "TestThing.test_x_3-b.netplay"


def test_long_cassette_name_stays_within_the_limit_before_the_suffix():
    name = cassette_name("test_x[" + "q" * 500 + "]")
    assert name.endswith(".netplay")
    assert len(name.removesuffix(".netplay")) <= 120


# -- resolved_mode -------------------------------------------------------------------------


@pytest.mark.parametrize("exists", [True, False])
def test_off_means_live(exists):
    assert resolved_mode("off", exists) == "live"


@pytest.mark.parametrize("mode", ["record", "replay"])
@pytest.mark.parametrize("exists", [True, False])
def test_record_and_replay_do_not_depend_on_the_cassette(mode, exists):
    assert resolved_mode(mode, exists) == mode


def test_once_replays_an_existing_cassette():
    assert resolved_mode("once", True) == "replay"


def test_once_records_a_missing_cassette():
    assert resolved_mode("once", False) == "record"


@pytest.mark.parametrize("key", ["speed", "stall_timeout", "settle"])
@pytest.mark.parametrize("value", ["inf", "-1", "0", "nan"])
def test_a_setting_that_no_replay_could_use_is_refused_where_it_was_given(key, value):
    with pytest.raises(
        ConfigError, match=rf"command line: bad value for '{key}': expected a finite number above 0"
    ):
        merge([("command line", {key: value})])


# -- one validation path ------------------------------------------------------------

REPLAY_KEYS = {"pace": "pacing", "speed": "speed", "stall_timeout": "stall_timeout", "settle": "settle"}


@pytest.mark.parametrize("key", sorted(REPLAY_KEYS) + ["match"])
@pytest.mark.parametrize(
    "value",
    ["2", "0.5", 3, "0", "-1", "inf", "1e400", "nan", "", "fast", True, "flood", "Causal", "exchange"],
)
def test_the_settings_merge_and_the_replay_config_accept_and_refuse_the_same_values(key, value):
    from pytest_netplayground.core.replay import ReplayConfig

    def outcome(convert):
        try:
            return ("ok", convert())
        except ConfigError as exc:
            return ("refused", str(exc).rpartition(": ")[2])

    merged = outcome(lambda: getattr(merge([("ini", {key: value})]), key))
    configured = outcome(
        lambda: getattr(ReplayConfig(**{REPLAY_KEYS.get(key, key): value}), REPLAY_KEYS.get(key, key))
    )
    if configured[0] == "ok" and key in ("pace", "match"):
        configured = ("ok", configured[1].value)
    assert merged == configured


def test_every_face_has_the_same_defaults():
    from pytest_netplayground.cli import build_parser
    from pytest_netplayground.core.replay import ReplayConfig

    settings, config = Settings(), ReplayConfig()
    args = build_parser().parse_args(["replay", "a"])
    assert settings.stall_timeout == config.stall_timeout == args.stall_timeout == 5.0
    assert settings.settle == config.settle == args.settle
    assert settings.speed == config.speed
    assert settings.pace == config.pacing.value and settings.match == config.match.value == args.match


def test_tunnel_mtu_is_a_marker_key_converted_and_checked_like_the_others():
    assert "tunnel_mtu" in MARKER_KEYS
    assert merge([("marker", {"tunnel_mtu": "9000"})]).tunnel_mtu == 9000
    assert merge([]).tunnel_mtu is None
    with pytest.raises(ConfigError, match="tunnel_mtu 100 is out of range"):
        merge([("marker", {"tunnel_mtu": 100})])
