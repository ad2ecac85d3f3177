"""TLS interception as an unprivileged user: curl over HTTPS recorded as plaintext and replayed
with the server absent, all without root (the sandbox's user namespace mounts the CA bundle)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests.test_tls_intercept import BODY, NEEDS_BUNDLE, PORT, SERVER


def _modules_loaded():
    """Import what the unprivileged child needs before it drops root (it may not read the files)."""
    import encodings.idna  # noqa: F401  (ssl encodes the server name with it, on first use)

    import cryptography.hazmat.primitives.asymmetric.ec  # noqa: F401
    import cryptography.x509  # noqa: F401

    import pytest_netplayground.runtime.supervisor  # noqa: F401
    import pytest_netplayground.runtime.tls_authority  # noqa: F401
    import pytest_netplayground.runtime.tls_interceptor  # noqa: F401
    import pytest_netplayground.runtime.tls_tap  # noqa: F401


#: The server's interpreter: the system's, which an unprivileged user may run (the test's own
#: may sit under a directory only root may enter). The server script needs only the standard library.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _record_and_replay(directory: str) -> dict:
    from pytest_netplayground import Sandbox
    from pytest_netplayground.runtime.tls_authority import CertificateAuthority

    own = CertificateAuthority.load_or_create(os.path.join(directory, "server-ca"))
    leaf = own.leaf("server")
    paths = {name: os.path.join(directory, name) for name in ("server.pem", "server-key.pem", "server.py")}
    for name, content in (("server.pem", leaf.chain_pem), ("server-key.pem", leaf.key_pem), ("server.py", SERVER.encode())):
        with open(paths[name], "wb") as f:
            f.write(content)
    cassette = os.path.join(directory, "https.netplay")
    curl = ["curl", "-sS", "--max-time", "10", f"https://server:{PORT}/"]
    ca_dir = os.path.join(directory, "ca")
    outcome = {"uid": os.getuid()}
    with Sandbox(tls="intercept", tls_ca_dir=ca_dir, mode="record", cassette=cassette) as sandbox:
        server, client = sandbox.add_host("server"), sandbox.add_host("client")
        process = server.spawn([SYSTEM_PYTHON, paths["server.py"], paths["server.pem"], paths["server-key.pem"], BODY])
        deadline = time.monotonic() + 10
        while not server.run(["ss", "-Hltn", f"sport = :{PORT}"], timeout=10).stdout.strip():
            assert process.poll() is None and time.monotonic() < deadline, "the HTTPS server did not start"
            time.sleep(0.05)
        recorded = client.run(curl, timeout=30, text=True)
    outcome["recorded"] = (recorded.returncode, recorded.stdout, recorded.stderr)
    outcome["notes"] = list(sandbox.tls_notes)
    with open(cassette) as f:
        outcome["records"] = [json.loads(line) for line in f]
    with Sandbox(tls_ca_dir=ca_dir, mode="replay", cassette=cassette) as sandbox:
        sandbox.add_host("server")
        client = sandbox.add_host("client")
        replayed = client.run(curl, timeout=30, text=True)
    outcome["replayed"] = (replayed.returncode, replayed.stdout, replayed.stderr)
    outcome["divergences"] = (sandbox.divergences.ok, sandbox.divergences.format())
    outcome["key_mode"] = os.stat(os.path.join(ca_dir, "ca-key.pem")).st_mode & 0o777
    return outcome


@pytest.mark.root  # root only to become the unprivileged user
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_https_is_intercepted_recorded_and_replayed_by_an_unprivileged_user():
    from tests.support.unprivileged import UID, run_unprivileged, user_dir

    if SYSTEM_PYTHON is None:
        pytest.skip("no python3 in /usr/bin or /bin for the unprivileged user to run the HTTPS server with")
    _modules_loaded()
    with user_dir() as directory:
        result = run_unprivileged(_record_and_replay, directory)
    assert result["uid"] == UID
    assert result["recorded"][:2] == (0, BODY), result["recorded"][2]
    assert result["notes"] == []
    records = result["records"]
    assert [r["sni"] for r in records if r.get("ev") == "tls"] == ["server"]
    sent = next(r["text"] for r in records if r.get("ev") == "data" and r["dir"] == "c2s")
    assert sent.startswith("GET / HTTP/1.1\r\nHost: server:8443\r\n")
    assert result["replayed"][:2] == (0, BODY), result["replayed"][2]
    assert result["divergences"][0], result["divergences"][1]
    assert result["key_mode"] == 0o600
