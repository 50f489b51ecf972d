"""Patroni for staging: installed pinned, in a virtualenv the postgres user can run; asked
through its REST API (https, verified against the staging CA, showing the operator's client
certificate, which Patroni asks every client for; its unsafe endpoints with the
``patroni-restapi`` credentials, ``infra.staging.access``).

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
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gridlink.project import VAR
from infra.binaries import apt_install
from infra.errors import ClusterError, Progress
from infra.files import reachable_root
from infra.processes import run
from infra.staging import access
from infra.staging.inventory import PATRONI_PORT, Host, Inventory

REQUIREMENTS = Path(__file__).with_name("patroni-requirements.txt")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def patroni_venv() -> Path:
    """Return the virtualenv the pinned Patroni is (or will be) installed in."""
    pinned = REQUIREMENTS.read_bytes()
    return reachable_root(VAR / "tools") / f"patroni-{hashlib.sha256(pinned).hexdigest()[:12]}"


def patroni_bin(progress: Progress) -> Path:
    """Return the bin folder holding ``patroni`` and ``patronictl``, installing them once."""
    venv = patroni_venv()
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


# --------------------------------------------------------------------------- its REST API


def patroni_role(host: Host) -> str | None:
    """Return 'primary' or 'replica' as Patroni's REST API says, None if it does not answer."""
    address = f"{host.address}:{PATRONI_PORT}"
    if access.https_status(address, "/primary", client_certificate=True, timeout=1.0) == 200:
        return "primary"
    if access.https_status(address, "/replica", client_certificate=True, timeout=1.0) == 200:
        return "replica"
    return None


def leader(inventory: Inventory) -> Host | None:
    """Return the database host Patroni made the primary, if one answers as it."""
    for host in inventory.databases:
        if patroni_role(host) == "primary":
            return host
    return None


def cluster_members(inventory: Inventory) -> list[dict[str, Any]]:
    """Return the members of the leader's ``/cluster`` answer (none without a leader)."""
    host = leader(inventory)
    cluster = None if host is None else _patroni_json(host, "/cluster")
    members = [] if cluster is None else cluster.get("members", [])
    return [m for m in members if isinstance(m, dict)]


def sync_standby(inventory: Inventory) -> Host | None:
    """Return the synchronous standby (the one Patroni may promote), as the leader sees it.

    The leader's ``/cluster`` rather than each member's own ``/synchronous``:
    a member learns that it became the standby a loop later, and the leader's
    view is the one ``infra.staging.hosts.failover_ready`` trusts too.
    """
    members = cluster_members(inventory)
    names = [m.get("name") for m in members if m.get("role") == "sync_standby"]
    return next((host for host in inventory.databases if host.name in names), None)


def switchover(config: Path, leader: Host, candidate: Host, timeout: float) -> None:
    """Hand the primary over from ``leader`` to ``candidate`` with ``patronictl switchover``.

    ``config`` is the leader's patroni.yml (0600): patronictl reads the REST API's
    credentials, the CA and etcd's client certificate there, never from its command line.
    """
    patronictl = str(patroni_bin(lambda _line: None) / "patronictl")
    command = [patronictl, "-c", str(config), "switchover", "--leader", leader.name]
    done = run([*command, "--candidate", candidate.name, "--force"], config.parent, timeout)
    if done.returncode != 0:
        raise ClusterError(f"patronictl switchover failed: {(done.stderr or done.stdout).strip()}")


def _patroni_json(host: Host, path: str) -> dict[str, Any] | None:
    """Return the JSON object Patroni's REST API answers at ``path``, None if it does not."""
    address = f"{host.address}:{PATRONI_PORT}"
    answer = access.https_request(address, path, client_certificate=True, timeout=2.0)
    if answer is None or answer[0] != 200:
        return None
    try:
        document = json.loads(answer[1])
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
