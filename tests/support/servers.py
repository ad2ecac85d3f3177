"""Real third-party servers started inside a sandbox host, for record and replay tests.

Each helper writes what its server needs (configuration, data, logs) under a
directory the test owns, starts the server in the host given, waits until it
listens and returns the :class:`Process`; the sandbox stops it when it closes.
A helper skips the test, with the reason, when the program is not installed.
Served files get a fixed modification time so that headers derived from it
(``Last-Modified``, ``ETag``) are the same in every run, and only what really
varies (``Date``) differs between a recording and a replay.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

NGINX_PORT = 8080
HTTP_SERVER_PORT = 8000
REDIS_PORT = 6379
POSTGRES_PORT = 5432

#: The files the HTTP servers serve: a longer and a shorter name, so a replay
#: can ask for one where the other was recorded.
WEB_FILES = {
    "index.txt": b"the index of the recorded site\n",
    "i.txt": b"i\n",
}
POSTGRES_PASSWORD = "recorded-secret"

#: The modification time given to every served file (2024-11-21T00:00:00Z).
FIXED_MTIME = 1732147200

#: How long a server may take to listen on this shared machine.
START_TIMEOUT = 30.0


def require(program: str) -> str:
    """The path of ``program``, or skip the test saying which program is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian: see .ci/run)")
    return path


def web_root(directory: Path) -> Path:
    """Write :data:`WEB_FILES` into ``directory/www`` with a fixed modification time."""
    root = directory / "www"
    root.mkdir(parents=True, exist_ok=True)
    for name, body in WEB_FILES.items():
        path = root / name
        path.write_bytes(body)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return root


def _started(host, process, port: int):
    host.wait_for_port(port, timeout=START_TIMEOUT)
    return process


def start_nginx(host, directory: Path, port: int = NGINX_PORT):
    """nginx in the foreground, one process, serving :data:`WEB_FILES` on ``port``."""
    nginx = require("nginx")
    root = web_root(directory)
    prefix = directory / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = prefix / "nginx.conf"
    conf.write_text(
        "daemon off;\n"
        "master_process off;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        "    default_type text/plain;\n"
        f"    client_body_temp_path {temp['body']};\n"
        f"    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n"
        f"    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        "    server {\n"
        f"        listen 0.0.0.0:{port};\n"
        f"        root {root};\n"
        "    }\n"
        "}\n"
    )
    # -e: the error log before the configuration is read (the default under
    # /var/log may not be writable); -p: relative paths stay in the test's directory.
    process = host.spawn([nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)])
    return _started(host, process, port)


def start_http_server(host, directory: Path, port: int = HTTP_SERVER_PORT):
    """Python's ``http.server`` speaking HTTP/1.1 (so a client can keep its connection)."""
    root = web_root(directory)
    process = host.spawn(
        [sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "--protocol", "HTTP/1.1",
         "--directory", str(root), str(port)],
        cwd=str(directory),
    )
    return _started(host, process, port)


def start_redis(host, directory: Path, port: int = REDIS_PORT):
    """redis-server with no persistence, reachable from other hosts."""
    server = require("redis-server")
    process = host.spawn(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--protected-mode", "no",
         "--bind", "0.0.0.0", "--dir", str(directory), "--daemonize", "no", "--logfile", ""],
        cwd=str(directory),
    )
    return _started(host, process, port)


def postgres_bin(program: str) -> str:
    """A PostgreSQL server program (``initdb``, ``postgres``), newest version first."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    pytest.skip(
        f"PostgreSQL's {program} is not installed under /usr/lib/postgresql/*/bin (Debian: postgresql)"
    )


@contextlib.contextmanager
def postgres_directory() -> Iterator[Path]:
    """A directory the ``postgres`` user owns, removed afterwards.

    Not under pytest's ``tmp_path``: its parents are private to root, and the
    server refuses to run as root.
    """
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("there is no postgres user (Debian: the postgresql package makes it)")
    directory = Path(tempfile.mkdtemp(prefix="netplay-pg-"))
    try:
        os.chown(directory, account.pw_uid, account.pw_gid)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def start_postgres(host, directory: Path, auth: str = "trust", port: int = POSTGRES_PORT, settings=()):
    """A fresh PostgreSQL cluster in ``directory`` (see :func:`postgres_directory`).

    ``auth`` is how TCP clients log in as ``postgres``: ``trust`` (no password)
    or ``md5`` (the password :data:`POSTGRES_PASSWORD`, stored as an MD5 hash
    so that the server really asks for an MD5 answer to a random salt).
    ``settings``: more server settings, ``name=value`` each (e.g. ``ssl=on``).
    """
    if auth not in ("trust", "md5"):
        raise ValueError(f"auth must be trust or md5, not {auth!r}")
    initdb, postgres = postgres_bin("initdb"), postgres_bin("postgres")
    psql = require("psql")
    data, sockets = directory / "data", directory / "sockets"
    as_postgres = {"user": "postgres", "group": "postgres", "cwd": str(directory),
                   "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}}
    result = host.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", f"--auth-host={auth}",
         "--no-sync", "--no-instructions"],
        timeout=120, **as_postgres,
    )
    if result.returncode != 0:
        raise AssertionError(f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    # initdb lets TCP clients in from loopback only; the clients are in other hosts.
    with open(data / "pg_hba.conf", "a") as f:
        f.write(f"host all all 0.0.0.0/0 {auth}\n")
    os.makedirs(sockets, exist_ok=True)
    os.chown(sockets, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    process = host.spawn(
        [postgres, "-D", str(data), "-k", str(sockets), "-p", str(port),
         "-c", "listen_addresses=*", "-c", "password_encryption=md5", "-c", "fsync=off",
         *(arg for setting in settings for arg in ("-c", setting))],
        **as_postgres,
    )
    _started(host, process, port)
    if auth == "md5":
        # The password is set over the Unix socket, where login is trusted.
        result = host.run(
            [psql, "-h", str(sockets), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
             "-c", f"ALTER USER postgres PASSWORD '{POSTGRES_PASSWORD}'"],
            timeout=60, **as_postgres,
        )
        if result.returncode != 0:
            raise AssertionError(f"setting the password failed: {result.stderr.decode(errors='replace')}")
    return process
