"""Files and folders the servers own: the postgres account when we are root, and private files."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from infra.errors import ClusterError

POSTGRES_USER = "postgres"


def as_root() -> bool:
    return os.geteuid() == 0


def postgres_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise ClusterError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
            "create one (useradd --system postgres) or run as a normal user."
        ) from None


def pg_command(command: Sequence[str]) -> list[str]:
    """Prefix a PostgreSQL command with runuser when we are root, since PostgreSQL refuses root."""
    if not as_root():
        return list(command)
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterError(
            "Running as root needs `runuser` to start PostgreSQL as the postgres user; "
            "install util-linux or run as a normal user."
        )
    return [runuser, "-u", POSTGRES_USER, "--", *command]


def make_folder_for(path: Path, account: str) -> None:
    """Make the folder ``path`` (if missing) ``account``'s when root, so its daemon writes it."""
    path.mkdir(parents=True, exist_ok=True)
    if as_root():
        user = pwd.getpwnam(account)
        os.chown(path, user.pw_uid, user.pw_gid)


def give_to_postgres(path: Path) -> None:
    """Hand a path to the postgres user when we are root, so the servers can use it."""
    if as_root():
        account = postgres_account()
        os.chown(path, account.pw_uid, account.pw_gid)


def give_to(path: Path, user: str, mode: int) -> None:
    """Make ``path`` ``user``'s own with ``mode`` (a daemon's data, which it alone may read)."""
    account = pwd.getpwnam(user)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)


def write_private(path: Path, content: str | bytes, owner: str | None = None) -> None:
    """Write ``content`` readable by ``owner`` (a user name; root when None) alone.

    The file is created 0600 before anything is written to it, so there is no
    moment at which another user could open it.
    """
    data = content.encode() if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    if owner is not None:
        account = pwd.getpwnam(owner)
        os.chown(path, account.pw_uid, account.pw_gid)


def make_pg_dir(path: Path, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)  # initdb and the postmaster insist on 0700 for data dirs
    give_to_postgres(path)


def write_pg_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)
    give_to_postgres(path)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def reachable_root(preferred: Path) -> Path:
    """Return ``preferred``, or a folder under /var/tmp if the postgres user cannot reach it.

    A checkout under a private home (``/root`` is 0700) cannot hold data that
    PostgreSQL, running as ``postgres``, must open; rather than fail, such a
    checkout keeps its cluster data in a folder named after it in /var/tmp.
    """
    if not as_root():
        return preferred
    existing = preferred.resolve()
    while not existing.exists():
        existing = existing.parent
    try:
        check_postgres_can_enter(existing)
    except ClusterError:
        digest = hashlib.sha256(str(preferred.resolve()).encode()).hexdigest()[:12]
        # A fixed folder per checkout, so later runs find the same data.
        return Path("/var/tmp") / f"gridlink-{digest}" / preferred.name  # noqa: S108
    return preferred


def check_postgres_can_enter(path: Path) -> None:
    """Fail early when the postgres user cannot traverse to the root, instead of deep in initdb."""
    account = postgres_account()
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for directory in [*reversed(path.parents), path]:
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ClusterError(
                f"The postgres user cannot enter {directory} (mode {stat.filemode(info.st_mode)}), "
                f"so it cannot reach the cluster data in {path}; run `chmod o+x {directory}` or "
                "choose a cluster root it can reach."
            )
