"""Create, configure, start and stop one PostgreSQL server, local or on a staging host.

A server is named by a ``PgServer``: where its data lives, the address and
port it listens on, the configuration it must run with and, on staging, the
network namespace it runs in. The configuration is rewritten on every start
(``gridlink.conf``, included from ``postgresql.conf``, and ``pg_hba.conf``) so
that it always follows the layout or the inventory, never a hand edit.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from infra.binaries import Tools
from infra.errors import ClusterError, Progress
from infra.files import POSTGRES_USER, make_pg_dir, pg_command, remove_tree, write_pg_file
from infra.processes import (
    ensure_port_free,
    in_namespace,
    launch,
    live_pid,
    remove_if_stale,
    run,
    stop_process,
)

START_TIMEOUT = 30.0
BUILD_TIMEOUT = 300.0
CONF_FILE = "gridlink.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"

BuildCommand = Callable[[Path], list[str]]


@dataclass(frozen=True)
class PgServer:
    """Name one PostgreSQL server: its data dir, address, configuration and namespace."""

    name: str
    host: str
    port: int
    data_dir: Path
    conf: str  # the text of gridlink.conf
    hba: str  # the text of pg_hba.conf
    socket_dir: Path | None = None  # where unix_socket_directories points
    netns: str | None = None
    # More libpq options for connecting to it (staging: sslmode, sslrootcert, passfile).
    client_options: tuple[tuple[str, str], ...] = ()

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / "postgresql.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()


def render_conf(settings: Mapping[str, str], written_by: str) -> str:
    """Render PostgreSQL settings (values already quoted as the file wants them)."""
    body = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return f"# Written by {written_by}; change that, not this file.\n{body}"


def pid(server: PgServer) -> int | None:
    return live_pid(server.pid_file, "postgres")


def connect(
    host: str, port: int, dbname: str = "postgres", options: Mapping[str, str] | None = None
) -> Any:
    """Open an autocommit admin connection to a server as the postgres superuser.

    ``options`` are more libpq options (TLS, a passfile), as a server's ``client_options``.
    """
    connection = psycopg2.connect(
        host=host,
        port=port,
        user=POSTGRES_USER,
        dbname=dbname,
        connect_timeout=2,
        application_name="gridlink-cluster",
        options="-c statement_timeout=5000",
        **(options or {}),
    )
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    return connection


def connect_to(server: PgServer, dbname: str = "postgres") -> Any:
    """Open an autocommit admin connection to ``server``, with its client options."""
    return connect(server.host, server.port, dbname, dict(server.client_options))


def answers(host: str, port: int) -> bool:
    try:
        with closing(connect(host, port)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return True
    except psycopg2.Error:
        return False


def initdb_command(tools: Tools) -> BuildCommand:
    def command(target: Path) -> list[str]:
        # C locale: it exists everywhere, unlike whatever LANG the developer has.
        return [
            tools.initdb,
            "-D",
            str(target),
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]

    return command


def basebackup_command(tools: Tools, primary: PgServer, replica: PgServer) -> BuildCommand:
    def command(target: Path) -> list[str]:
        # -R copies these connection options into primary_conninfo, so application_name
        # makes the replica show up under its own name in pg_stat_replication.
        # -c fast: without an immediate checkpoint the backup waits minutes for one.
        return [
            tools.pg_basebackup,
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            POSTGRES_USER,
            "-d",
            f"application_name={replica.name}",
            "-D",
            str(target),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ]

    return command


def ensure(
    tools: Tools, server: PgServer, step: str, build: BuildCommand, progress: Progress
) -> None:
    """Create the server's data dir if it has none, then make sure the server runs."""
    if not server.initialised:
        create_data_dir(server, step, build, progress)
    start(tools, server, progress)


def create_data_dir(server: PgServer, step: str, build: BuildCommand, progress: Progress) -> None:
    """Build a data dir in a scratch sibling and rename it into place when complete.

    A build that fails or is interrupted then never leaves a half-made dir that a
    later `up` would mistake for a real one.
    """
    if server.data_dir.exists():
        raise ClusterError(
            f"{server.data_dir} exists but is not a PostgreSQL data dir; move it away "
            "or purge the cluster (`down --purge`)."
        )
    partial = server.data_dir.parent / f".{server.name}.partial"
    remove_tree(partial)
    make_pg_dir(partial)
    progress(f"{server.name}: {step}")
    command = in_namespace(server.netns, pg_command(build(partial)))
    result = run(command, cwd=server.data_dir.parent, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        remove_tree(partial)
        raise ClusterError(
            f"{server.name}: `{shlex.join(command)}` failed:\n{result.stderr.strip()}"
        )
    # A replica inherits the primary's log dir; start it with a log of its own.
    remove_tree(partial / "log")
    make_pg_dir(partial / "log")
    partial.rename(server.data_dir)


def _install_config(server: PgServer) -> None:
    """Write the server's own settings and access rules; make postgresql.conf include them.

    The primary's files are copied by pg_basebackup, so each replica overwrites them.
    """
    write_pg_file(server.data_dir / CONF_FILE, server.conf)
    write_pg_file(server.data_dir / "pg_hba.conf", server.hba)
    main_conf = server.data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if INCLUDE_LINE not in text:
        write_pg_file(main_conf, f"{text.rstrip()}\n\n{INCLUDE_LINE}\n")


def start(tools: Tools, server: PgServer, progress: Progress) -> None:
    """Start a created PostgreSQL server unless it runs, and wait until it accepts queries."""
    running = pid(server)
    if running is not None:
        progress(f"{server.name}: already running on {server.port} (pid {running})")
        return
    if not server.initialised:
        raise ClusterError(f"{server.name} has no data dir at {server.data_dir}; run `up` first.")
    ensure_port_free(server.port, server.name, server.host)
    remove_if_stale(server.pid_file, "postgres")
    if server.socket_dir is not None:
        remove_if_stale(server.socket_dir / f".s.PGSQL.{server.port}.lock", "postgres")
    _install_config(server)
    command = in_namespace(
        server.netns,
        pg_command(
            [
                tools.pg_ctl,
                "start",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log_file),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-s",
            ]
        ),
    )
    launch(
        server.name,
        f"{server.host}:{server.port}",
        command,
        cwd=server.data_dir.parent,
        timeout=START_TIMEOUT,
        answers=lambda: answers(server.host, server.port),
        log=server.log_file,
    )
    progress(f"{server.name}: started on {server.host}:{server.port} (pid {pid(server)})")


def stop(server: PgServer, progress: Progress) -> None:
    # SIGINT is PostgreSQL's fast shutdown, what `pg_ctl stop -m fast` sends.
    stop_process(server.name, pid(server), signal.SIGINT, "postgres", server.log_file, progress)


def ensure_app_database(server: PgServer, database: str, user: str, progress: Progress) -> None:
    """Create the application's role and database on the primary if they are missing."""
    role = sql.Identifier(user)
    with closing(connect(server.host, server.port)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            progress(f"{server.name}: created role {user}")
        # pg_monitor lets the application read pg_stat_replication for its replica router.
        cursor.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), role)
            )
            progress(f"{server.name}: created database {database}")
