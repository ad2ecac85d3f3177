"""Programs the tests run that a bare machine may lack: each such test skips, saying which."""

from __future__ import annotations

import shutil

# The Debian package of each program, where its name is not the program's (.ci/run installs them all).
PACKAGES = {"ping": "iputils-ping", "ip": "iproute2", "mount": "mount", "umount": "mount"}


def missing(*programs: str) -> str | None:
    """The skip reason if one of ``programs`` is not on PATH, else None."""
    absent = [p for p in programs if shutil.which(p) is None]
    if not absent:
        return None
    packages = " ".join(dict.fromkeys(PACKAGES.get(p, p) for p in absent))
    return f"needs {', '.join(absent)}, not installed here (apt-get install {packages}, or run .ci/run)"
