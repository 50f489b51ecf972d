"""Find the server binaries (PostgreSQL, Redis, HAProxy), installing them with apt when root."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ClusterError, Progress

PG_TOOLS = ("initdb", "pg_ctl", "pg_basebackup")
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
APT_INSTALL = "apt-get update && apt-get install -y --no-install-recommends postgresql redis-server"


@dataclass(frozen=True)
class Tools:
    """Hold the absolute paths of the server binaries `up` runs."""

    initdb: str
    pg_ctl: str
    pg_basebackup: str
    redis_server: str


def tools(progress: Progress) -> Tools:
    """Find the server binaries, installing them with apt-get when that is possible."""
    found = _locate_tools()
    if found is None:
        _install_packages(progress)
        found = _locate_tools()
    if found is None:
        raise ClusterError(
            "PostgreSQL (initdb, pg_ctl, pg_basebackup) or redis-server is still missing; "
            "install them and put them on PATH."
        )
    return found


def program(name: str, package: str, progress: Progress) -> str:
    """Return the path of ``name``, installing Debian's ``package`` first if it is missing."""
    path = shutil.which(name)
    if path is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise ClusterError(f"{name} is missing; install {package} and put it on PATH.")
        progress(f"installing {package} with apt-get (output follows)")
        apt_install([package])
        path = shutil.which(name)
    if path is None:
        raise ClusterError(f"{name} is still missing after installing {package}.")
    return path


def _locate_tools() -> Tools | None:
    pg = _debian_pg_tools() or _path_pg_tools()
    redis_server = shutil.which("redis-server")
    if pg is None or redis_server is None:
        return None
    return Tools(*pg, redis_server=redis_server)


def _debian_pg_tools() -> tuple[str, str, str] | None:
    """Return the tools of the highest PostgreSQL version under /usr/lib/postgresql."""
    if not DEBIAN_PG_ROOT.is_dir():
        return None
    bins = [d / "bin" for d in DEBIAN_PG_ROOT.iterdir() if _has_pg_tools(d / "bin")]
    if not bins:
        return None
    best = max(bins, key=lambda b: tuple(int(n) for n in re.findall(r"\d+", b.parent.name)))
    initdb, pg_ctl, pg_basebackup = (str(best / tool) for tool in PG_TOOLS)
    return initdb, pg_ctl, pg_basebackup


def _has_pg_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in PG_TOOLS)


def _path_pg_tools() -> tuple[str, str, str] | None:
    initdb, pg_ctl, pg_basebackup = (shutil.which(tool) for tool in PG_TOOLS)
    if initdb is None or pg_ctl is None or pg_basebackup is None:
        return None
    return initdb, pg_ctl, pg_basebackup


def _install_packages(progress: Progress) -> None:
    """Install PostgreSQL and Redis with apt-get, or explain how to when we may not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError(
            "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) or redis-server are "
            f"missing. On Debian/Ubuntu install them with: sudo sh -c '{APT_INSTALL}' - "
            "elsewhere install PostgreSQL and Redis and put their binaries on PATH."
        )
    progress("installing postgresql and redis-server with apt-get (output follows)")
    apt_install(["postgresql", "redis-server"])


def apt_install(packages: Sequence[str]) -> None:
    """Install ``packages`` with apt-get (as root); raise ClusterError if apt fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
    ):
        # Output is not captured: the user watches apt's progress as it happens.
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise ClusterError(f"`{shlex.join(command)}` failed; fix apt and run it again.")
