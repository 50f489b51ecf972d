"""Faults the tests inject into real servers: slow or paused replay, a frozen Redis.

Host-level faults of staging (a host's processes killed, its link cut or
slowed) live in ``infra/staging/faults.py``.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import closing

from infra import postgres
from infra.errors import ClusterError
from infra.files import write_pg_file
from infra.postgres import PgServer

_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")


def set_replica_setting(replica: PgServer, setting: str, value: str) -> None:
    """Set one configuration parameter on a replica and reload it (like `pg_ctl reload`)."""
    if not replica.initialised:
        raise ClusterError(f"{replica.name} has not been created yet; run `up` first.")
    if not _SETTING_NAME.fullmatch(setting):
        raise ClusterError(f"{setting!r} is not a PostgreSQL parameter name.")
    auto_conf = replica.data_dir / "postgresql.auto.conf"
    quoted = value.replace("'", "''")
    kept = [
        line
        for line in auto_conf.read_text().splitlines()
        if line.split("=", 1)[0].strip().lower() != setting
    ]
    write_pg_file(auto_conf, "\n".join([*kept, f"{setting} = '{quoted}'"]) + "\n")
    pid = postgres.pid(replica)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # exactly what `pg_ctl reload` sends


def set_replay_paused(replica: PgServer, paused: bool) -> None:
    """Pause or resume WAL replay on a running replica (``pg_wal_replay_pause()``/``_resume()``).

    A paused replica keeps receiving WAL but applies none of it, so its lag
    grows for as long as the primary takes writes.
    """
    call = "pg_wal_replay_pause()" if paused else "pg_wal_replay_resume()"
    with (
        closing(postgres.connect_to(replica)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SELECT {call}")
