"""The supervisor's requests: the caller's dicts become typed values at the boundary.

No sockets and no root: the dicts are the ones ``Host.spawn`` and friends send.
"""

from __future__ import annotations

import signal

import pytest

from pytest_netplayground.errors import SandboxError
from pytest_netplayground.runtime import control
from pytest_netplayground.runtime.control import StdioMode


def spawn_args(**changes) -> dict:
    args = dict(host=1, argv=["/bin/echo", "hi"], env={"A": "1"}, cwd="/", user=None, group=None)
    args["stdio"] = ["fd", "pipe", "stdout"]
    return {**args, **changes}


def test_a_spawn_request_is_one_value_with_its_descriptors():
    request = control.parse("spawn", spawn_args(), [7])
    assert isinstance(request, control.Spawn)
    assert request.argv == ("/bin/echo", "hi")
    assert request.stdio == (StdioMode.FD, StdioMode.PIPE, StdioMode.STDOUT)
    assert request.fds == (7,)
    assert (request.host, request.cwd, request.env, request.user) == (1, "/", {"A": "1"}, None)


def test_stdio_modes_are_the_strings_on_the_wire():
    assert [mode.value for mode in StdioMode] == ["fd", "pipe", "devnull", "stdout", "inherit"]
    assert StdioMode.of("devnull") == "devnull"
    assert StdioMode.of(None) is StdioMode.INHERIT


@pytest.mark.parametrize(
    ("changes", "fds", "problem"),
    [
        ({"stdio": ["fd", "fd", "fd"]}, [3], "3 stdio modes take a descriptor, but 1 came"),
        ({"stdio": ["pipe", "pipe"]}, [], "three modes"),
        ({"stdio": ["pipe", "socket", "pipe"]}, [], "'socket' is not a valid StdioMode"),
        ({"argv": []}, [], "argv is empty"),
        ({"host": "1"}, [], "'host' must be <class 'int'>"),
    ],
)
def test_a_malformed_spawn_request_is_refused_naming_what_is_wrong(changes, fds, problem):
    with pytest.raises(SandboxError, match="bad 'spawn' request") as caught:
        control.parse("spawn", spawn_args(**changes), fds)
    assert problem in str(caught.value)


def test_a_missing_field_is_refused():
    args = spawn_args()
    del args["cwd"]
    with pytest.raises(SandboxError, match="bad 'spawn' request.*cwd"):
        control.parse("spawn", args, [0])


def test_close_defaults_to_sigterm_and_the_default_grace():
    assert control.parse("close", {}, []) == control.Close(signal.SIGTERM, control.DEFAULT_GRACE, "abort")
    request = control.parse("close", {"signal": 9, "grace": 0, "cassette": ("keep_as", "/x")}, [])
    assert (request.signal, request.grace, request.cassette) == (9, 0.0, ("keep_as", "/x"))


def test_every_operation_the_caller_sends_has_a_request_and_unknown_ones_are_refused():
    assert set(control.REQUESTS) == {
        "add_host", "spawn", "socket", "listening", "signal", "namespaces", "stats", "close",
        "set_link", "clear_faults", "partition", "heal", "connections", "reset_connection", "fault_state",
        "set_toxics", "half_close", "set_link_toxics", "drive", "start_shadow", "shadow_state", "stop_shadow",
    }
    assert control.parse("socket", {"host": 0, "family": 2, "type": 1}, []) == control.MakeSocket(0, 2, 1)
    assert control.parse("signal", {"pid": 5, "signal": 15, "group": None}, []).group is False
    with pytest.raises(SandboxError, match="unknown supervisor request 'fly'"):
        control.parse("fly", {}, [])
