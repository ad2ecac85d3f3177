"""Host names: validation, the hosts file every host sees, the nsswitch hosts line."""

from __future__ import annotations

import pytest

from pytest_netplayground.core.names import NameTable, check_name, default_name, hosts_text, nsswitch_text
from pytest_netplayground.errors import ConfigError


def test_default_names_count_from_one():
    assert [default_name(i) for i in range(3)] == ["h1", "h2", "h3"]


@pytest.mark.parametrize("name", ["server", "db-1", "A", "x" * 63, "9lives", "Web2"])
def test_dns_labels_are_accepted(name):
    assert check_name(name, 0) == name


@pytest.mark.parametrize(
    "name",
    ["", "-lead", "trail-", "under_score", "dot.ted", "sp ace", "x" * 64, "caf\u00e9", "a/b", "tab\t"],
)
def test_what_is_not_a_dns_label_is_refused_naming_the_value(name):
    with pytest.raises(ConfigError, match="is not a DNS label") as info:
        check_name(name, 0)
    assert repr(name) in str(info.value)


def test_a_name_that_is_not_a_string_is_refused():
    with pytest.raises(ConfigError, match="must be a string"):
        check_name(3, 0)


def test_names_are_unique_without_regard_to_case():
    with pytest.raises(ConfigError, match="'Server' is already taken"):
        check_name("Server", 1, ("server",))


def test_localhost_is_reserved():
    with pytest.raises(ConfigError, match="reserved"):
        check_name("LocalHost", 0)


def test_another_hosts_default_name_is_refused_but_its_own_is_fine():
    assert check_name("h2", 1) == "h2"
    with pytest.raises(ConfigError, match="'h3' is the default name of host number 3"):
        check_name("h3", 0)
    with pytest.raises(ConfigError, match="default name"):
        check_name("H1", 1)
    assert check_name("h1x", 4) == "h1x"


def test_hosts_text_lists_loopback_then_each_host_with_its_default_name():
    text = hosts_text([("10.0.0.1", "server"), ("10.0.0.2", "h2"), ("10.0.0.3", "client")])
    assert text == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.1\tserver\th1\n10.0.0.2\th2\n10.0.0.3\tclient\th3\n"
    )


def test_hosts_text_lists_the_ipv6_address_of_a_host_under_the_same_names():
    text = hosts_text([("10.0.0.1", "server", "fd00::1"), ("10.0.0.2", "h2", "fd00::2")])
    assert text.splitlines()[2:] == [
        "10.0.0.1\tserver\th1",
        "fd00::1\tserver\th1",
        "10.0.0.2\th2",
        "fd00::2\th2",
    ]


def test_a_host_added_later_only_appends_to_the_text():
    table = NameTable()
    assert table.add("10.0.0.1", "server") == "server"
    before = table.text()
    assert table.add("10.0.0.2") == "h2"
    after = table.text()
    assert after.startswith(before) and after[len(before) :] == "10.0.0.2\th2\n"
    assert table.names() == ("server", "h2")


def test_a_refused_name_leaves_the_table_as_it_was():
    table = NameTable()
    table.add("10.0.0.1", "server")
    with pytest.raises(ConfigError):
        table.add("10.0.0.2", "SERVER")
    assert table.names() == ("server",)


DEBIAN = "passwd:         files\nhosts:          files dns\nnetworks:       files\n"


def test_nsswitch_with_files_first_is_left_alone():
    assert nsswitch_text(DEBIAN) is None
    assert nsswitch_text("hosts: files [NOTFOUND=return] dns\n") is None


def test_nsswitch_gets_files_first_for_hosts_only():
    text = nsswitch_text("passwd: sss files\nhosts: resolve [!UNAVAIL=return] dns files myhostname\n")
    assert text == "passwd: sss files\nhosts:\tfiles resolve [!UNAVAIL=return] dns myhostname\n"


def test_nsswitch_files_keeps_no_action_of_its_old_place():
    assert nsswitch_text("hosts: dns files [ NOTFOUND=return ] mdns\n") == "hosts:\tfiles dns mdns\n"
    assert nsswitch_text("hosts: dns\n") == "hosts:\tfiles dns\n"


def test_nsswitch_without_a_hosts_line_gets_one():
    assert (
        nsswitch_text("# hosts: dns\npasswd: files\n") == "# hosts: dns\npasswd: files\nhosts:\tfiles dns\n"
    )
