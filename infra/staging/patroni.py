"""Patroni for staging, pinned, in a virtualenv of its own that the postgres user can run.

Debian's package is Patroni 3.0.2, whose synchronous mode has since been
fixed in ways this project depends on (a ``/sync`` key out of step with
``synchronous_standby_names`` could promote an asynchronous standby; the
failsafe state survived a promotion; a bug in the etcd v3 client). So staging
runs the release pinned in ``patroni-requirements.txt`` beside this file,
installed from PyPI the first time into ``var/tools/patroni-<digest>`` (a
folder the postgres user can reach, see ``reachable_root``), built on
Debian's ``/usr/bin/python3``: the project's own interpreter may live under
a home the postgres user cannot enter. A new pin makes a new virtualenv.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from infra.binaries import apt_install
from infra.errors import ClusterError, Progress
from infra.files import reachable_root

REQUIREMENTS = Path(__file__).with_name("patroni-requirements.txt")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def patroni_bin(progress: Progress) -> Path:
    """Return the bin folder holding ``patroni`` and ``patronictl``, installing them once."""
    pinned = REQUIREMENTS.read_bytes()
    venv = reachable_root(PROJECT_ROOT / "var" / "tools") / (
        f"patroni-{hashlib.sha256(pinned).hexdigest()[:12]}"
    )
    complete = venv / ".complete"
    if complete.exists():
        return venv / "bin"
    progress(f"installing Patroni ({REQUIREMENTS.name}) into {venv}")
    shutil.rmtree(venv, ignore_errors=True)  # an install cut short
    venv.parent.mkdir(parents=True, exist_ok=True)
    _make_venv(venv, progress)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "-r", str(REQUIREMENTS)]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"installing Patroni failed: {(done.stderr or done.stdout).strip()}")
    complete.touch()
    return venv / "bin"


def _make_venv(path: Path, progress: Progress) -> None:
    python = str(SYSTEM_PYTHON) if SYSTEM_PYTHON.exists() else shutil.which("python3")
    if python is None:
        raise ClusterError("Patroni needs a python3 the postgres user can run; install python3.")
    made = subprocess.run([python, "-m", "venv", str(path)], capture_output=True, check=False)
    if made.returncode != 0 and os.geteuid() == 0 and shutil.which("apt-get"):
        progress("installing python3-venv with apt-get (output follows)")
        apt_install(["python3-venv"])
        made = subprocess.run([python, "-m", "venv", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        raise ClusterError(
            f"could not make a virtualenv for Patroni with {python}: "
            f"{made.stderr.decode(errors='replace').strip()} (install python3-venv)"
        )
    path.chmod(0o755)
