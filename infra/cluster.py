"""Run a local PostgreSQL primary, streaming replicas and Redis from the machine's binaries.

Development (`gridlink cluster up|status|down`) and the test suite both use this
module, so they talk to real servers with real replication lag instead of mocks.
Everything lives under one directory (the layout's root)::

    root/primary      PostgreSQL data dir of the primary (log in primary/log/)
    root/replicaK     data dir of streaming replica K, listening on pg_port + K
    root/redis        Redis pid file, log file and (if a test saves one) dump.rdb
    root/run          Unix sockets of the PostgreSQL servers

Servers listen on 127.0.0.1 only and are found again through their pid files,
so `down` stops exactly what `up` started and never anything else.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import redis
from psycopg2 import sql

Progress = Callable[[str], None]

POSTGRES_USER = "postgres"
PG_TOOLS = ("initdb", "pg_ctl", "pg_basebackup")
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
REDIS_MAXMEMORY = "1gb"
APT_INSTALL = "apt-get update && apt-get install -y --no-install-recommends postgresql redis-server"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
BUILD_TIMEOUT = 300.0
LOG_TAIL_LINES = 20
CONF_FILE = "gridlink.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
PG_HBA = """\
# Written by infra/cluster.py: a loopback-only development cluster, so trust is enough.
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
"""
_REPLICA_NAME = re.compile(r"replica([1-9][0-9]*)")
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
# Entries `up` creates under the root; `down(purge=True)` refuses to delete anything else.
_OWNED_ENTRY = re.compile(
    r"primary|replica[1-9][0-9]*|redis|run|\.(primary|replica[1-9][0-9]*)\.partial"
)


class ClusterError(Exception):
    """Report a cluster problem in a sentence the user can act on."""


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
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _pg_url(self, port: int) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{port}/{self.database}"


@dataclass(frozen=True)
class ServerStatus:
    """Describe one server of the cluster as `status` found it."""

    name: str
    role: str  # "primary" | "replica" | "redis"
    port: int
    running: bool
    pid: int | None
    state: str | None = None  # replicas: "streaming", "catchup", "stopped", ...
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass(frozen=True)
class _PgServer:
    """Name one PostgreSQL server of a layout: the primary or a replica."""

    name: str
    port: int
    data_dir: Path

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / "postgresql.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()


@dataclass(frozen=True)
class _Tools:
    """Hold the absolute paths of the server binaries `up` runs."""

    initdb: str
    pg_ctl: str
    pg_basebackup: str
    redis_server: str


@dataclass(frozen=True)
class _ReplicaFacts:
    """Hold what a running replica says about its own recovery."""

    in_recovery: bool
    replay_lsn: int | None
    receive_lsn: int | None
    seconds_since_replay: float | None


@dataclass(frozen=True)
class _PrimaryFacts:
    """Hold what the primary says about its WAL position and its standbys."""

    current_lsn: int
    states: dict[str, str]  # application_name -> pg_stat_replication.state


# --------------------------------------------------------------------------- public API


def up(layout: ClusterLayout, progress: Progress = print) -> list[ServerStatus]:
    """Create and start whatever part of the cluster is missing or stopped; return its status."""
    tools = _tools(progress)
    _prepare_root(layout)
    primary = _primary(layout)
    _ensure_pg(tools, layout, primary, "initdb", _initdb_command(tools), progress)
    _ensure_app_database(layout, progress)
    for replica in _replicas(layout, discover=False):
        build = _basebackup_command(tools, layout, replica)
        _ensure_pg(tools, layout, replica, "pg_basebackup", build, progress)
    _start_redis(tools, layout, progress)
    return status(layout)


def status(layout: ClusterLayout) -> list[ServerStatus]:
    """Report every server under the layout's root, including stopped ones, without raising."""
    primary = _primary(layout)
    primary_pid = _pg_pid(primary)
    replicas = _replicas(layout, discover=True)
    # Ask the replicas before the primary, so the primary's current LSN is never older
    # than a replica's replay LSN and the byte lag cannot come out negative.
    facts = {replica.name: _replica_facts(replica) for replica in replicas}
    primary_facts = _primary_facts(primary) if primary_pid is not None else None
    rows = [ServerStatus("primary", "primary", primary.port, primary_pid is not None, primary_pid)]
    rows += [_replica_status(r, facts[r.name], primary_facts) for r in replicas]
    redis_pid = _redis_pid(layout)
    rows.append(ServerStatus("redis", "redis", layout.redis_port, redis_pid is not None, redis_pid))
    return rows


def down(layout: ClusterLayout, purge: bool = False, progress: Progress = print) -> None:
    """Stop every server `up` ever started under the root; with purge, delete the root too."""
    # Replicas first, so they do not spend the primary's shutdown reconnecting to it.
    for server in [*reversed(_replicas(layout, discover=True)), _primary(layout)]:
        _stop_pg(server, progress)
    _stop_redis(layout, progress)
    if purge:
        _purge(layout, progress)


def stop_server(layout: ClusterLayout, name: str) -> None:
    """Fast-shut down one server ("primary", "replicaK" or "redis") and wait until it is gone."""
    server = _server_named(layout, name)
    if server is None:
        _stop_redis(layout, _silent)
    else:
        _stop_pg(server, _silent)


def start_server(layout: ClusterLayout, name: str) -> None:
    """Start one already-created server and wait until it answers."""
    server = _server_named(layout, name)
    tools = _tools(_silent)
    if server is None:
        _start_redis(tools, layout, _silent)
    else:
        _start_pg(tools, layout, server, _silent)


def set_replica_setting(layout: ClusterLayout, name: str, setting: str, value: str) -> None:
    """Set one configuration parameter on a replica and reload it (like `pg_ctl reload`)."""
    server = _server_named(layout, name)
    if server is None or server.name == "primary":
        raise ClusterError(f"{name!r} is not a replica; name one like 'replica1'.")
    if not server.initialised:
        raise ClusterError(f"{name} has not been created yet; run `gridlink cluster up` first.")
    if not _SETTING_NAME.fullmatch(setting):
        raise ClusterError(f"{setting!r} is not a PostgreSQL parameter name.")
    auto_conf = server.data_dir / "postgresql.auto.conf"
    quoted = value.replace("'", "''")
    kept = [
        line
        for line in auto_conf.read_text().splitlines()
        if line.split("=", 1)[0].strip().lower() != setting
    ]
    _write_pg_file(auto_conf, "\n".join([*kept, f"{setting} = '{quoted}'"]) + "\n")
    pid = _pg_pid(server)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # exactly what `pg_ctl reload` sends


def set_replay_paused(layout: ClusterLayout, name: str, paused: bool) -> None:
    """Pause or resume WAL replay on a running replica (``pg_wal_replay_pause()``/``_resume()``).

    A paused replica keeps receiving WAL but applies none of it, so its lag
    grows for as long as the primary takes writes.
    """
    server = _server_named(layout, name)
    if server is None or server.name == "primary":
        raise ClusterError(f"{name!r} is not a replica; name one like 'replica1'.")
    call = "pg_wal_replay_pause()" if paused else "pg_wal_replay_resume()"
    with closing(_connect(server.port)) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT {call}")


def set_redis_frozen(layout: ClusterLayout, frozen: bool) -> None:
    """Freeze (SIGSTOP) or thaw (SIGCONT) the running Redis.

    A frozen Redis keeps its sockets open but answers nothing: clients meet
    timeouts rather than refused connections, as with a hung host. Thawed, it
    carries on with its data and its run_id, as if it had never left.
    """
    pid = _redis_pid(layout)
    if pid is None:
        raise ClusterError("redis is not running.")
    os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def format_status(statuses: list[ServerStatus]) -> str:
    """Render statuses as an aligned text table, one server per line."""
    header = ("NAME", "ROLE", "PORT", "RUNNING", "PID", "STATE", "LAG BYTES", "LAG SECONDS")
    rows = [header] + [
        (
            s.name,
            s.role,
            str(s.port),
            "yes" if s.running else "no",
            _dash(s.pid),
            _dash(s.state),
            _dash(s.lag_bytes),
            "-" if s.lag_seconds is None else f"{s.lag_seconds:.1f}",
        )
        for s in statuses
    ]
    return "\n".join(align_rows(rows))


def align_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Pad every cell to its column's width; return one line per row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# --------------------------------------------------------------------------- layout


def _primary(layout: ClusterLayout) -> _PgServer:
    return _PgServer("primary", layout.pg_port, layout.root / "primary")


def _replica(layout: ClusterLayout, index: int) -> _PgServer:
    name = f"replica{index}"
    return _PgServer(name, layout.replica_port(index), layout.root / name)


def _replicas(layout: ClusterLayout, *, discover: bool) -> list[_PgServer]:
    """List the layout's replicas; with discover, add every replica dir found under the root."""
    indexes = set(range(1, layout.replicas + 1))
    if discover and layout.root.is_dir():
        for entry in layout.root.iterdir():
            match = _REPLICA_NAME.fullmatch(entry.name)
            if match and entry.is_dir():
                indexes.add(int(match.group(1)))
    return [_replica(layout, index) for index in sorted(indexes)]


def _server_named(layout: ClusterLayout, name: str) -> _PgServer | None:
    """Map a server name to its PostgreSQL server, or None for Redis."""
    if name == "redis":
        return None
    if name == "primary":
        return _primary(layout)
    match = _REPLICA_NAME.fullmatch(name)
    if match is None:
        raise ClusterError(f"There is no server {name!r}; use 'primary', 'replicaK' or 'redis'.")
    return _replica(layout, int(match.group(1)))


# --------------------------------------------------------------------------- binaries


def _tools(progress: Progress) -> _Tools:
    """Find the server binaries, installing them with apt-get when that is possible."""
    tools = _locate_tools()
    if tools is None:
        _install_packages(progress)
        tools = _locate_tools()
    if tools is None:
        raise ClusterError(
            "PostgreSQL (initdb, pg_ctl, pg_basebackup) or redis-server is still missing; "
            "install them and put them on PATH."
        )
    return tools


def _locate_tools() -> _Tools | None:
    pg = _debian_pg_tools() or _path_pg_tools()
    redis_server = shutil.which("redis-server")
    if pg is None or redis_server is None:
        return None
    return _Tools(*pg, redis_server=redis_server)


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


# --------------------------------------------------------------------------- files, users


def _as_root() -> bool:
    return os.geteuid() == 0


def _postgres_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise ClusterError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
            "create one (useradd --system postgres) or run as a normal user."
        ) from None


def _pg_command(command: Sequence[str]) -> list[str]:
    """Prefix a PostgreSQL command with runuser when we are root, since PostgreSQL refuses root."""
    if not _as_root():
        return list(command)
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterError(
            "Running as root needs `runuser` to start PostgreSQL as the postgres user; "
            "install util-linux or run as a normal user."
        )
    return [runuser, "-u", POSTGRES_USER, "--", *command]


def _give_to_postgres(path: Path) -> None:
    """Hand a path to the postgres user when we are root, so the servers can use it."""
    if _as_root():
        account = _postgres_account()
        os.chown(path, account.pw_uid, account.pw_gid)


def _make_pg_dir(path: Path, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)  # initdb and the postmaster insist on 0700 for data dirs
    _give_to_postgres(path)


def _write_pg_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)
    _give_to_postgres(path)


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _prepare_root(layout: ClusterLayout) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    if _as_root():
        _check_postgres_can_enter(layout.root.resolve())
    _make_pg_dir(layout.root / "run", 0o755)
    (layout.root / "redis").mkdir(exist_ok=True)


def reachable_root(preferred: Path) -> Path:
    """Return ``preferred``, or a folder under /var/tmp if the postgres user cannot reach it.

    A checkout under a private home (``/root`` is 0700) cannot hold data that
    PostgreSQL, running as ``postgres``, must open; rather than fail, such a
    checkout keeps its cluster data in a folder named after it in /var/tmp.
    """
    if not _as_root():
        return preferred
    existing = preferred.resolve()
    while not existing.exists():
        existing = existing.parent
    try:
        _check_postgres_can_enter(existing)
    except ClusterError:
        digest = hashlib.sha256(str(preferred.resolve()).encode()).hexdigest()[:12]
        # A fixed folder per checkout, so later runs find the same data.
        return Path("/var/tmp") / f"gridlink-{digest}" / preferred.name  # noqa: S108
    return preferred


def _check_postgres_can_enter(path: Path) -> None:
    """Fail early when the postgres user cannot traverse to the root, instead of deep in initdb."""
    account = _postgres_account()
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


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _run(command: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; turn a hang or a missing binary into ClusterError."""
    # libpq reads PG* variables; a developer's PGHOST or PGPORT must not redirect the tools.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    try:
        return subprocess.run(
            list(command),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"`{shlex.join(command)}` did not finish within {timeout:.0f} s."
        ) from None
    except OSError as exc:
        raise ClusterError(f"Could not run `{shlex.join(command)}`: {exc}.") from exc


# --------------------------------------------------------------------------- processes


def _process_alive(pid: int, program: str) -> bool:
    """Tell whether pid is a live process of `program` (not a zombie, not a recycled pid)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    # Daemonised servers are re-parented to pid 1, which may never reap them: a zombie is dead.
    return state not in ("Z", "X") and program.encode() in cmdline


def _read_pid(pid_file: Path) -> int | None:
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first_line) if first_line.isdigit() else None


def _live_pid(pid_file: Path, program: str) -> int | None:
    pid = _read_pid(pid_file)
    return pid if pid is not None and _process_alive(pid, program) else None


def _remove_if_stale(pid_file: Path, program: str) -> None:
    """Delete a lock file left by a crash, whose pid may since belong to an unrelated process."""
    if pid_file.exists() and _live_pid(pid_file, program) is None:
        pid_file.unlink(missing_ok=True)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` every 0.1 s; tell whether it held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_answers(port: int) -> bool:
    """Tell whether something accepts connections on the loopback ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _ensure_port_free(port: int, name: str) -> None:
    if port_answers(port):
        raise ClusterError(
            f"Port {port} on 127.0.0.1 is already taken by a process this cluster did not "
            f"start, so {name} cannot use it; stop that process or choose other ports."
        )


def _stop_process(
    name: str, pid: int | None, sig: signal.Signals, program: str, log: Path, progress: Progress
) -> None:
    """Signal a server to shut down and wait until its process is gone."""
    if pid is None:
        progress(f"{name}: not running")
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not _process_alive(pid, program), STOP_TIMEOUT):
        raise ClusterError(
            f"{name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s; "
            f"its log ends with:\n{_log_tail(log)}"
        )
    progress(f"{name}: stopped (pid {pid})")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_pid(server: _PgServer) -> int | None:
    return _live_pid(server.pid_file, "postgres")


def _connect(port: int) -> Any:
    """Open an autocommit admin connection to a local server as the postgres superuser."""
    connection = psycopg2.connect(
        host="127.0.0.1",
        port=port,
        user=POSTGRES_USER,
        dbname="postgres",
        connect_timeout=2,
        application_name="gridlink-cluster",
        options="-c statement_timeout=5000",
    )
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    return connection


def _pg_answers(port: int) -> bool:
    try:
        with closing(_connect(port)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return True
    except psycopg2.Error:
        return False


def _initdb_command(tools: _Tools) -> Callable[[Path], list[str]]:
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


def _basebackup_command(
    tools: _Tools, layout: ClusterLayout, replica: _PgServer
) -> Callable[[Path], list[str]]:
    def command(target: Path) -> list[str]:
        # -R copies these connection options into primary_conninfo, so application_name
        # makes the replica show up under its own name in pg_stat_replication.
        # -c fast: without an immediate checkpoint the backup waits minutes for one.
        return [
            tools.pg_basebackup,
            "-h",
            "127.0.0.1",
            "-p",
            str(layout.pg_port),
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


def _ensure_pg(
    tools: _Tools,
    layout: ClusterLayout,
    server: _PgServer,
    step: str,
    build: Callable[[Path], list[str]],
    progress: Progress,
) -> None:
    """Create the server's data dir if it has none, then make sure the server runs."""
    if not server.initialised:
        _create_data_dir(layout, server, step, build, progress)
    _start_pg(tools, layout, server, progress)


def _create_data_dir(
    layout: ClusterLayout,
    server: _PgServer,
    step: str,
    build: Callable[[Path], list[str]],
    progress: Progress,
) -> None:
    """Build a data dir in a scratch sibling and rename it into place when complete.

    A build that fails or is interrupted then never leaves a half-made dir that a
    later `up` would mistake for a real one.
    """
    if server.data_dir.exists():
        raise ClusterError(
            f"{server.data_dir} exists but is not a PostgreSQL data dir; move it away "
            "or run `gridlink cluster down --purge`."
        )
    partial = layout.root / f".{server.name}.partial"
    _remove_tree(partial)
    _make_pg_dir(partial)
    progress(f"{server.name}: {step}")
    command = _pg_command(build(partial))
    result = _run(command, cwd=layout.root, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        _remove_tree(partial)
        raise ClusterError(
            f"{server.name}: `{shlex.join(command)}` failed:\n{result.stderr.strip()}"
        )
    # A replica inherits the primary's log dir; start it with a log of its own.
    _remove_tree(partial / "log")
    _make_pg_dir(partial / "log")
    _write_pg_file(partial / "pg_hba.conf", PG_HBA)
    partial.rename(server.data_dir)


def _write_server_conf(layout: ClusterLayout, server: _PgServer) -> None:
    """Write the server's own settings and make postgresql.conf include them.

    Rewritten on every start so ports and socket dir follow the layout; the primary's
    file is copied by pg_basebackup, so each replica overwrites it with its own.
    """
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(server.port),
        # Our own socket dir: /var/run/postgresql belongs to the system server.
        "unix_socket_directories": f"'{(layout.root / 'run').resolve()}'",
        "cluster_name": f"'{server.name}'",
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
    body = "".join(f"{key} = {value}\n" for key, value in settings.items())
    _write_pg_file(
        server.data_dir / CONF_FILE,
        "# Written by infra/cluster.py on every start; change the layout, not this file.\n" + body,
    )
    main_conf = server.data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if INCLUDE_LINE not in text:
        _write_pg_file(main_conf, f"{text.rstrip()}\n\n{INCLUDE_LINE}\n")


def _start_pg(tools: _Tools, layout: ClusterLayout, server: _PgServer, progress: Progress) -> None:
    """Start a created PostgreSQL server unless it runs, and wait until it accepts queries."""
    pid = _pg_pid(server)
    if pid is not None:
        progress(f"{server.name}: already running on {server.port} (pid {pid})")
        return
    if not server.initialised:
        raise ClusterError(
            f"{server.name} has no data dir at {server.data_dir}; run `gridlink cluster up` first."
        )
    _ensure_port_free(server.port, server.name)
    _remove_if_stale(server.pid_file, "postgres")
    _remove_if_stale(layout.root / "run" / f".s.PGSQL.{server.port}.lock", "postgres")
    _write_server_conf(layout, server)
    command = _pg_command(
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
    )
    result = _run(command, cwd=layout.root, timeout=START_TIMEOUT + 10)
    if result.returncode != 0 or not wait_until(lambda: _pg_answers(server.port), START_TIMEOUT):
        raise ClusterError(
            f"{server.name} did not come up on port {server.port} "
            f"({result.stderr.strip() or 'no answer'}); {server.log_file} ends with:\n"
            f"{_log_tail(server.log_file)}"
        )
    progress(f"{server.name}: started on {server.port} (pid {_pg_pid(server)})")


def _stop_pg(server: _PgServer, progress: Progress) -> None:
    # SIGINT is PostgreSQL's fast shutdown, what `pg_ctl stop -m fast` sends.
    _stop_process(
        server.name, _pg_pid(server), signal.SIGINT, "postgres", server.log_file, progress
    )


def _ensure_app_database(layout: ClusterLayout, progress: Progress) -> None:
    """Create the application's role and database on the primary if they are missing."""
    role = sql.Identifier(layout.user)
    with closing(_connect(layout.pg_port)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (layout.user,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            progress(f"primary: created role {layout.user}")
        # pg_monitor lets the application read pg_stat_replication for its replica router.
        cursor.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (layout.database,))
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(layout.database), role)
            )
            progress(f"primary: created database {layout.database}")


# --------------------------------------------------------------------------- replication status


def _lsn(text: str | None) -> int | None:
    """Turn an LSN like '0/3000148' into a byte position."""
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _replica_facts(replica: _PgServer) -> _ReplicaFacts | None:
    if _pg_pid(replica) is None:
        return None
    try:
        with closing(_connect(replica.port)) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                " pg_last_wal_receive_lsn()::text,"
                " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
            )
            in_recovery, replay, receive, since_replay = cursor.fetchone()
    except psycopg2.Error:
        return None
    return _ReplicaFacts(in_recovery, _lsn(replay), _lsn(receive), since_replay)


def _primary_facts(primary: _PgServer) -> _PrimaryFacts | None:
    try:
        with closing(_connect(primary.port)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            (current,) = cursor.fetchone()
            cursor.execute("SELECT application_name, state FROM pg_stat_replication")
            states = {str(name): str(state) for name, state in cursor.fetchall()}
    except psycopg2.Error:
        return None
    current_lsn = _lsn(current)
    return None if current_lsn is None else _PrimaryFacts(current_lsn, states)


def _replica_status(
    replica: _PgServer, facts: _ReplicaFacts | None, primary: _PrimaryFacts | None
) -> ServerStatus:
    pid = _pg_pid(replica)
    base = ServerStatus(replica.name, "replica", replica.port, pid is not None, pid)
    if pid is None:
        return _with(base, state="stopped" if replica.initialised else "absent")
    if facts is None:
        return _with(base, state="unreachable")
    if not facts.in_recovery:
        return _with(base, state="promoted", lag_bytes=0, lag_seconds=0.0)
    state = primary.states.get(replica.name, "disconnected") if primary else "disconnected"
    lag_bytes = None
    if primary is not None and facts.replay_lsn is not None:
        lag_bytes = max(0, primary.current_lsn - facts.replay_lsn)
    return _with(base, state=state, lag_bytes=lag_bytes, lag_seconds=_lag_seconds(facts, primary))


def _lag_seconds(facts: _ReplicaFacts, primary: _PrimaryFacts | None) -> float | None:
    """Return how far replay is behind in time, without growing while the primary is idle.

    "now - last replayed commit" alone keeps growing on an idle primary, so a replica
    that has replayed all it received (or all the primary has) counts as 0 s behind,
    as in postgres_exporter. `>=` rather than `=`: after a restart the walreceiver
    reports its receive position from the start of a WAL segment, behind replay.
    """
    replay = facts.replay_lsn
    if replay is not None and (
        (facts.receive_lsn is not None and replay >= facts.receive_lsn)
        or (primary is not None and replay >= primary.current_lsn)
    ):
        return 0.0
    if facts.seconds_since_replay is None:
        return None
    return max(0.0, facts.seconds_since_replay)


def _with(base: ServerStatus, **changes: Any) -> ServerStatus:
    return ServerStatus(**{**base.__dict__, **changes})


# --------------------------------------------------------------------------- Redis


def _redis_dir(layout: ClusterLayout) -> Path:
    return layout.root / "redis"


def _redis_pid(layout: ClusterLayout) -> int | None:
    return _live_pid(_redis_dir(layout) / "redis.pid", "redis")


def _redis_answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()  # answers LOADING (an error) while a dump.rdb is being read
        return True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _start_redis(tools: _Tools, layout: ClusterLayout, progress: Progress) -> None:
    """Start Redis unless it runs, and wait until it answers PING."""
    pid = _redis_pid(layout)
    if pid is not None:
        progress(f"redis: already running on {layout.redis_port} (pid {pid})")
        return
    _ensure_port_free(layout.redis_port, "redis")
    directory = _redis_dir(layout)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    # No persistence by default, but --dir stays set so a dump.rdb saved by a test
    # (SHUTDOWN SAVE) is loaded again on the next start.
    command = [
        tools.redis_server,
        "--port",
        str(layout.redis_port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        # Evict under memory pressure rather than refuse writes (README: "The change stream").
        "--maxmemory",
        REDIS_MAXMEMORY,
        "--maxmemory-policy",
        "allkeys-lru",
        "--daemonize",
        "yes",
        "--pidfile",
        str(directory / "redis.pid"),
        "--logfile",
        str(log),
        "--dir",
        str(directory),
    ]
    result = _run(command, cwd=directory, timeout=START_TIMEOUT)
    if result.returncode != 0 or not wait_until(
        lambda: _redis_answers(layout.redis_port), START_TIMEOUT
    ):
        raise ClusterError(
            f"redis did not come up on port {layout.redis_port} "
            f"({result.stderr.strip() or 'no answer to PING'}); {log} ends with:\n{_log_tail(log)}"
        )
    progress(f"redis: started on {layout.redis_port} (pid {_redis_pid(layout)})")


def _stop_redis(layout: ClusterLayout, progress: Progress) -> None:
    # SIGTERM makes Redis shut down cleanly; with --save "" it writes no dump on the way.
    log = _redis_dir(layout) / "redis.log"
    _stop_process("redis", _redis_pid(layout), signal.SIGTERM, "redis", log, progress)


# --------------------------------------------------------------------------- purge, misc


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


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _silent(_line: str) -> None:
    """Swallow progress lines for the single-server helpers used by tests."""
