"""The package's public face: what it promises to export, and a Sandbox's declared state."""

from __future__ import annotations

import pytest

import pytest_netplayground
from pytest_netplayground import Sandbox


@pytest.mark.parametrize("name", pytest_netplayground.__all__)
def test_every_name_in_all_exists(name):
    assert getattr(pytest_netplayground, name) is not None


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        pytest_netplayground.CompletedProcess  # noqa: B018


def test_a_sandbox_keeps_no_undeclared_state():
    sb = Sandbox()
    with pytest.raises(AttributeError):
        sb.interrupted = True


def test_processes_is_a_read_only_view():
    sb = Sandbox()
    assert sb.processes == ()
    with pytest.raises(AttributeError):
        sb.processes = []  # type: ignore[misc]
