"""Run a local PostgreSQL primary, streaming replicas and Redis from the machine's binaries.

Development (`gridlink cluster up|status|down`) and the test suite both use this
module, so they talk to real servers with real replication lag instead of mocks.
Everything lives under one directory (the layout's root)::

    root/primary      PostgreSQL data dir of the primary (log in primary/log/)
    root/replicaK     data dir of streaming replica K, listening on pg_port + K
    root/redis        Redis pid file, log file and (if a test saves one) dump.rdb
    root/run          Unix sockets of the PostgreSQL servers

Servers listen on 127.0.0.1 only and are found again through their pid files,
so `down` stops exactly what `up` started and never anything else. The
servers themselves are driven by ``infra.postgres`` and ``infra.redis_server``,
which staging (``infra/staging/``) drives on its hosts too.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gridlink.ops.text_table import align_rows
from infra import binaries, faults, postgres, redis_server
from infra.binaries import apt_install
from infra.errors import ClusterError, Progress, silent
from infra.files import as_root, check_postgres_can_enter, make_pg_dir, reachable_root
from infra.postgres import PgServer
from infra.processes import LOOPBACK, port_answers, wait_until
from infra.redis_server import RedisServer
from infra.status import ServerProcessStatus, database_rows, format_status

__all__ = [
    "ClusterError",
    "ClusterLayout",
    "ServerProcessStatus",
    "align_rows",
    "apt_install",
    "down",
    "format_status",
    "port_answers",
    "reachable_root",
    "set_redis_frozen",
    "set_replay_paused",
    "set_replica_setting",
    "start_server",
    "status",
    "stop_server",
    "up",
    "wait_until",
]

PG_HBA = """\
# Written by infra/cluster.py: a loopback-only development cluster, so trust is enough.
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
"""
_REPLICA_NAME = re.compile(r"replica([1-9][0-9]*)")
# Entries `up` creates under the root; `down(purge=True)` refuses to delete anything else.
_OWNED_ENTRY = re.compile(
    r"primary|replica[1-9][0-9]*|redis|run|\.(primary|replica[1-9][0-9]*)\.partial"
)


@dataclass(frozen=True)
class ClusterLayout:
    """Describe where a local cluster keeps its data and which loopback ports it uses."""

    root: Path
    # Below Linux's ephemeral range (32768-60999), where an outgoing
    # connection's local port could take a server's port from under it.
    pg_port: int = 15432
    redis_port: int = 16379
    replicas: int = 1
    database: str = "gridlink"
    user: str = "gridlink"

    def __post_init__(self) -> None:
        """Reject layouts that cannot be started."""
        if self.replicas < 0:
            raise ClusterError(f"A cluster needs 0 or more replicas, not {self.replicas}.")

    def replica_port(self, index: int) -> int:
        """Return the port of replica `index` (1-based)."""
        return self.pg_port + index

    @property
    def database_url(self) -> str:
        """Return the SQLAlchemy URL of the application database on the primary."""
        return self._pg_url(self.pg_port)

    @property
    def replica_urls(self) -> tuple[str, ...]:
        """Return the SQLAlchemy URLs of the application database on each replica."""
        return tuple(
            self._pg_url(self.replica_port(index)) for index in range(1, self.replicas + 1)
        )

    @property
    def redis_url(self) -> str:
        """Return the URL of the Redis server (database 0)."""
        return f"redis://{LOOPBACK}:{self.redis_port}/0"

    def _pg_url(self, port: int) -> str:
        return f"postgresql+psycopg2://{self.user}@{LOOPBACK}:{port}/{self.database}"


# --------------------------------------------------------------------------- public API


def up(layout: ClusterLayout, progress: Progress = print) -> list[ServerProcessStatus]:
    """Create and start whatever part of the cluster is missing or stopped; return its status."""
    tools = binaries.tools(progress)
    _prepare_root(layout)
    primary = _primary(layout)
    postgres.ensure(tools, primary, "initdb", postgres.initdb_command(tools), progress)
    postgres.ensure_app_database(primary, layout.database, layout.user, progress)
    for replica in _replicas(layout, discover=False):
        build = postgres.basebackup_command(tools, primary, replica)
        postgres.ensure(tools, replica, "pg_basebackup", build, progress)
    redis_server.start(tools, _redis(layout), progress)
    return status(layout)


def status(layout: ClusterLayout) -> list[ServerProcessStatus]:
    """Report every server under the layout's root, including stopped ones, without raising."""
    rows = database_rows(_primary(layout), _replicas(layout, discover=True))
    redis_pid = redis_server.pid(_redis(layout))
    rows.append(
        ServerProcessStatus("redis", "redis", layout.redis_port, redis_pid is not None, redis_pid)
    )
    return rows


def down(layout: ClusterLayout, purge: bool = False, progress: Progress = print) -> None:
    """Stop every server `up` ever started under the root; with purge, delete the root too."""
    # Replicas first, so they do not spend the primary's shutdown reconnecting to it.
    for server in [*reversed(_replicas(layout, discover=True)), _primary(layout)]:
        postgres.stop(server, progress)
    redis_server.stop(_redis(layout), progress)
    if purge:
        _purge(layout, progress)


def stop_server(layout: ClusterLayout, name: str) -> None:
    """Fast-shut down one server ("primary", "replicaK" or "redis") and wait until it is gone."""
    server = _server_named(layout, name)
    if server is None:
        redis_server.stop(_redis(layout), silent)
    else:
        postgres.stop(server, silent)


def start_server(layout: ClusterLayout, name: str) -> None:
    """Start one already-created server and wait until it answers."""
    server = _server_named(layout, name)
    tools = binaries.tools(silent)
    if server is None:
        redis_server.start(tools, _redis(layout), silent)
    else:
        postgres.start(tools, server, silent)


def set_replica_setting(layout: ClusterLayout, name: str, setting: str, value: str) -> None:
    """Set one configuration parameter on a replica and reload it (like `pg_ctl reload`)."""
    faults.set_replica_setting(_replica_named(layout, name), setting, value)


def set_replay_paused(layout: ClusterLayout, name: str, paused: bool) -> None:
    """Pause or resume WAL replay on a running replica."""
    faults.set_replay_paused(_replica_named(layout, name), paused)


def set_redis_frozen(layout: ClusterLayout, frozen: bool) -> None:
    """Freeze (SIGSTOP) or thaw (SIGCONT) the running Redis, as with a hung host."""
    redis_server.set_frozen(_redis(layout), frozen)


# --------------------------------------------------------------------------- layout


def _server_conf(layout: ClusterLayout, name: str, port: int) -> str:
    settings = {
        "listen_addresses": f"'{LOOPBACK}'",
        "port": str(port),
        # Our own socket dir: /var/run/postgresql belongs to the system server.
        "unix_socket_directories": f"'{(layout.root / 'run').resolve()}'",
        "cluster_name": f"'{name}'",
        "wal_level": "replica",
        "max_wal_senders": "10",
        # Keep WAL for a replica that was stopped for a while, without slots to clean up.
        "wal_keep_size": "'512MB'",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        # Reconnect to a restarted primary within a second instead of the default five.
        "wal_retrieve_retry_interval": "'1s'",
        "shared_buffers": "'128MB'",
        "max_connections": "200",
    }
    return postgres.render_conf(settings, "infra/cluster.py on every start (change the layout)")


def _pg_server(layout: ClusterLayout, name: str, port: int) -> PgServer:
    return PgServer(
        name=name,
        host=LOOPBACK,
        port=port,
        data_dir=layout.root / name,
        conf=_server_conf(layout, name, port),
        hba=PG_HBA,
        socket_dir=layout.root / "run",
    )


def _primary(layout: ClusterLayout) -> PgServer:
    return _pg_server(layout, "primary", layout.pg_port)


def _replica(layout: ClusterLayout, index: int) -> PgServer:
    return _pg_server(layout, f"replica{index}", layout.replica_port(index))


def _redis(layout: ClusterLayout) -> RedisServer:
    return RedisServer("redis", LOOPBACK, layout.redis_port, layout.root / "redis")


def _replicas(layout: ClusterLayout, *, discover: bool) -> list[PgServer]:
    """List the layout's replicas; with discover, add every replica dir found under the root."""
    indexes = set(range(1, layout.replicas + 1))
    if discover and layout.root.is_dir():
        for entry in layout.root.iterdir():
            match = _REPLICA_NAME.fullmatch(entry.name)
            if match and entry.is_dir():
                indexes.add(int(match.group(1)))
    return [_replica(layout, index) for index in sorted(indexes)]


def _server_named(layout: ClusterLayout, name: str) -> PgServer | None:
    """Map a server name to its PostgreSQL server, or None for Redis."""
    if name == "redis":
        return None
    if name == "primary":
        return _primary(layout)
    match = _REPLICA_NAME.fullmatch(name)
    if match is None:
        raise ClusterError(f"There is no server {name!r}; use 'primary', 'replicaK' or 'redis'.")
    return _replica(layout, int(match.group(1)))


def _replica_named(layout: ClusterLayout, name: str) -> PgServer:
    server = _server_named(layout, name)
    if server is None or server.name == "primary":
        raise ClusterError(f"{name!r} is not a replica; name one like 'replica1'.")
    return server


def _prepare_root(layout: ClusterLayout) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    if as_root():
        check_postgres_can_enter(layout.root.resolve())
    make_pg_dir(layout.root / "run", 0o755)
    (layout.root / "redis").mkdir(exist_ok=True)


def _purge(layout: ClusterLayout, progress: Progress) -> None:
    """Delete the root, refusing if it holds anything the cluster did not create."""
    if not layout.root.exists():
        return
    strangers = sorted(p.name for p in layout.root.iterdir() if not _OWNED_ENTRY.fullmatch(p.name))
    if strangers:
        raise ClusterError(
            f"Refusing to delete {layout.root}: it also holds {', '.join(strangers)}, which the "
            "cluster did not create; delete it by hand if you mean to."
        )
    shutil.rmtree(layout.root)
    progress(f"removed {layout.root}")
