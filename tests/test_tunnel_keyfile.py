"""Tunnel key files: made private and once, read only if private."""

from __future__ import annotations

import os
import stat

import pytest

from pytest_netplayground.core.tunnel_crypto import KEY_SIZE
from pytest_netplayground.errors import TunnelKeyError
from pytest_netplayground.runtime.keyfile import read_key_file, write_key_file


def test_written_key_is_private_and_readable(tmp_path):
    path = tmp_path / "tunnel.key"
    old = os.umask(0)
    try:
        write_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_key_file(path)) == KEY_SIZE
    assert read_key_file(path) != read_key_file(write_key_file(tmp_path / "other.key"))


def test_never_overwrites(tmp_path):
    path = tmp_path / "tunnel.key"
    write_key_file(path)
    before = path.read_bytes()
    with pytest.raises(TunnelKeyError, match="exists already"):
        write_key_file(path)
    assert path.read_bytes() == before


def test_does_not_follow_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "tunnel.key").symlink_to(target)
    with pytest.raises(TunnelKeyError):
        write_key_file(tmp_path / "tunnel.key")
    assert not target.exists()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TunnelKeyError, match="cannot create the key file"):
        write_key_file(tmp_path / "no" / "such" / "k")


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(TunnelKeyError, match="--make-key"):
        read_key_file(tmp_path / "absent.key")


def test_a_key_others_can_read_is_refused(tmp_path):
    path = write_key_file(tmp_path / "tunnel.key")
    os.chmod(path, 0o644)
    with pytest.raises(TunnelKeyError, match="chmod 600"):
        read_key_file(path)
    assert len(read_key_file(path, require_private=False)) == KEY_SIZE


def test_a_directory_is_not_a_key(tmp_path):
    with pytest.raises(TunnelKeyError):
        read_key_file(tmp_path)
