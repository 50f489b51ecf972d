"""Client traffic against a real gunicorn server, and the checks run on it after a fault.

The fast fault tests (``tests/e2e/test_faults.py``) and the soak
(``tests/e2e/test_soak.py``) both inject a fault while client threads write
and read, record every answer, and then check what users rely on: no 5xx but
503 ``unavailable`` with ``Retry-After``, every acknowledged write in the
primary, no duplicate when a failed write is retried with its
``Idempotency-Key``, and the same server processes serving normally again.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.cache import RedisLifetime
from gridlink.db.lsn import parse_lsn
from gridlink.settings import Settings
from infra import cluster
from infra.processes import process_alive
from infra.serving import ApiServer
from tests.support.api import random_username
from tests.support.clusters import cluster_layout, running, settings_for
from tests.support.servers import Reply, api_request, json_body, server_environment, serving
from tests.support.waiting import wait_for, wait_for_setting

# Writers create far more than the default 100 grids and links; the limits are not under test.
LIMITS = {"GRIDLINK_MAX_GRIDS_PER_USER": "100000", "GRIDLINK_MAX_LINKS_PER_GRID": "100000"}
SOURCE = "X-Gridlink-Read-Source"
# A client pauses this long between requests: enough load to meet every fault
# in flight, little enough to leave the machine's two cores to the servers.
PAUSE_SECONDS = 0.02
RETRY_SECONDS = 30.0


# --------------------------------------------------------------------------- the servers


@dataclass(frozen=True)
class FaultRig:
    """A cluster of a test module's own, one gunicorn server on it, and a primary engine."""

    layout: cluster.ClusterLayout
    settings: Settings
    server: ApiServer
    primary: Engine

    @property
    def address(self) -> str:
        return self.server.address


@contextmanager
def fault_rig(name: str, mail: Path, workers: int = 2) -> Iterator[FaultRig]:
    """Start the cluster ``name`` (one replica) and a gunicorn of ``workers`` workers on it."""
    with running(cluster_layout(name)) as layout:
        settings = settings_for(layout, mail)
        environment = server_environment(settings, **LIMITS)
        primary = create_engine(
            layout.database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True
        )
        try:
            with serving(settings, workers=workers, environment=environment) as (server,):
                yield FaultRig(layout, settings, server, primary)
        finally:
            primary.dispose()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Attempt:
    """One request sent and what came of it: a reply, or the error that stopped it."""

    method: str
    path: str
    body: Any
    token: str | None
    key: str | None  # Idempotency-Key
    started: float  # time.monotonic()
    finished: float
    reply: Reply | None
    error: str | None = None

    @property
    def status(self) -> int | None:
        return None if self.reply is None else self.reply.status

    @property
    def acknowledged(self) -> bool:
        return self.reply is not None and 200 <= self.reply.status < 300

    @property
    def is_write(self) -> bool:
        return self.method != "GET"

    def describe(self) -> str:
        outcome = self.error if self.reply is None else f"{self.status} {self.reply.body[:200]!r}"
        return f"{self.method} {self.path} -> {outcome} (at {self.started:.1f}-{self.finished:.1f})"


def attempt(
    address: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    key: str | None = None,
) -> Attempt:
    """Send one request; a broken connection is recorded, not raised."""
    headers = {} if key is None else {"Idempotency-Key": key}
    started = time.monotonic()
    try:
        reply: Reply | None = api_request(address, method, path, body, token, headers)
        error = None
    except (OSError, http.client.HTTPException) as problem:
        reply, error = None, type(problem).__name__
    return Attempt(method, path, body, token, key, started, time.monotonic(), reply, error)


def resend(address: str, sent: Attempt) -> Attempt:
    """Send the same request again, with the same Idempotency-Key."""
    return attempt(address, sent.method, sent.path, sent.body, sent.token, sent.key)


@dataclass(frozen=True)
class Account:
    """A user of the traffic: their token and one grid of theirs to put links in."""

    username: str
    token: str
    grid: str


def open_account(address: str, prefix: str = "flt") -> Account:
    """Sign a user up through the API and give them a first grid."""
    username = random_username(prefix)
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": "a fault password",
    }
    signed_up = api_request(address, "POST", "/api/auth/signup/", body)
    assert signed_up.status == 201, signed_up
    token = json_body(signed_up)["token"]
    grid = api_request(address, "POST", "/api/grids/", {"title": "first"}, token)
    assert grid.status == 201, grid
    return Account(username, token, json_body(grid)["slug"])


def create_something(address: str, account: Account, number: int) -> Attempt:
    """Create a grid or a link (alternately), under a fresh Idempotency-Key."""
    key = secrets.token_hex(16)
    if number % 2:
        body = {"grid": account.grid, "title": f"link {number}", "url": "https://example.com/"}
        return attempt(address, "POST", "/api/links/", body, account.token, key)
    return attempt(address, "POST", "/api/grids/", {"title": f"grid {number}"}, account.token, key)


def read_something(address: str, account: Account, number: int) -> Attempt:
    """Read what users read: a public profile, a public grid, and token-authenticated lists."""
    choice = number % 4
    if choice == 0:
        return attempt(address, "GET", f"/api/users/{account.username}/")
    if choice == 1:
        return attempt(address, "GET", f"/api/grids/{account.grid}/")
    if choice == 2:
        return attempt(address, "GET", "/api/users/me/", token=account.token)
    return attempt(address, "GET", "/api/grids/?limit=5", token=account.token)


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """Client threads that write and read for every account until stopped.

    Each account has a writer thread (creating grids and links with
    Idempotency-Keys) and a reader thread; every attempt is recorded.
    """

    address: str
    accounts: list[Account]
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for account in self.accounts:
            for action in (create_something, read_something):
                thread = threading.Thread(target=self._loop, args=(action, account), daemon=True)
                self._threads.append(thread)
                thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, action: Callable[[str, Account, int], Attempt], account: Account) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            done = action(self.address, account, number)
            with self._lock:
                self.attempts.append(done)
            time.sleep(PAUSE_SECONDS)

    @property
    def writes(self) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.is_write]

    def answered_since(self, since: float) -> list[Attempt]:
        """List the attempts sent after ``since`` (``time.monotonic()``) that got an answer."""
        with self._lock:
            return [a for a in self.attempts if a.started > since and a.reply is not None]

    def wait_for_answers(self, since: float, per_account: int = 2, timeout: float = 30) -> None:
        """Wait until writes and reads sent after ``since`` are answered, ``per_account`` of each.

        The traffic has then met the servers as they are at ``since``: before
        a fault, it flows; during one, it has met the fault; after, the return.
        """

        def answered() -> bool:
            done = self.answered_since(since)
            wanted = per_account * len(self.accounts)
            writes = sum(1 for a in done if a.is_write)
            return writes >= wanted and len(done) - writes >= wanted

        wait_for(answered, timeout, f"{per_account} writes and reads per account answered")


# --------------------------------------------------------------------------- checks


def is_unavailable(reply: Reply) -> bool:
    """Tell whether ``reply`` is API.md's 503: type ``unavailable`` and a ``Retry-After``."""
    retry_after = reply.headers.get("Retry-After") or ""
    body = json_body(reply)
    return (
        reply.status == 503
        and isinstance(body, dict)
        and body.get("error", {}).get("type") == "unavailable"
        and retry_after.isdigit()
        and int(retry_after) >= 1
    )


def improper_answers(attempts: Iterable[Attempt], *, writes_may_503: bool) -> list[str]:
    """Describe every error answer (4xx or 5xx) but API.md's 503 to a write; none is expected."""
    wrong = []
    for done in attempts:
        if done.reply is None or done.reply.status < 400:
            continue
        if done.is_write and writes_may_503 and is_unavailable(done.reply):
            continue
        wrong.append(done.describe())
    return wrong


def broken(attempts: Iterable[Attempt]) -> list[Attempt]:
    """List the attempts that got no answer at all (connection reset, refused, timed out)."""
    return [done for done in attempts if done.reply is None]


def retry_unacknowledged(address: str, writes: Iterable[Attempt]) -> list[Attempt]:
    """Resend every write that was not acknowledged, same key, until it is; return the answers.

    409 (the first try still holds its key) and 503 are waited out; anything
    else fails the test. A few at a time: a soak leaves hundreds.
    """
    failed = [write for write in writes if not write.acknowledged]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(partial(_retry_until_acknowledged, address), failed))


def _retry_until_acknowledged(address: str, write: Attempt) -> Attempt:
    deadline = time.monotonic() + RETRY_SECONDS
    again = resend(address, write)
    while not again.acknowledged:
        transient = again.reply is None or again.status in (409, 503)
        assert transient, f"retrying {write.describe()} got {again.describe()}"
        assert time.monotonic() < deadline, f"never acknowledged: {again.describe()}"
        time.sleep(0.2)
        again = resend(address, write)
    return again


def created_slugs(attempts: Iterable[Attempt]) -> dict[str, set[str]]:
    """Map each token to the slugs its acknowledged creating writes answered."""
    slugs: dict[str, set[str]] = {}
    for done in attempts:
        if done.acknowledged and done.is_write and done.token is not None:
            assert done.reply is not None
            slugs.setdefault(done.token, set()).add(json_body(done.reply)["slug"])
    return slugs


_LIVE_SLUGS = text(
    """
    SELECT g.slug FROM grids g JOIN users u ON u.id = g.user_id
    WHERE u.username = :username AND NOT g.is_deleted
    UNION ALL
    SELECT l.slug FROM links l JOIN grids g ON g.id = l.grid_id JOIN users u ON u.id = g.user_id
    WHERE u.username = :username AND NOT l.is_deleted
    """
)


def slugs_in_primary(primary: Engine, account: Account) -> list[str]:
    """Read the slugs of every live grid and link of ``account`` from the primary's rows."""
    with primary.connect() as connection:
        return list(connection.execute(_LIVE_SLUGS, {"username": account.username}).scalars())


def assert_nothing_lost_nothing_doubled(
    primary: Engine, accounts: Iterable[Account], attempts: Iterable[Attempt]
) -> int:
    """Check the primary holds exactly the acknowledged writes; return how many there are.

    Every write that answered 2xx (first try or retry) is there, and nothing
    else is: a retry that created a second row would show up as a slug that
    no answer named.
    """
    answered = created_slugs(attempts)
    total = 0
    for account in accounts:
        stored = slugs_in_primary(primary, account)
        expected = answered.get(account.token, set()) | {account.grid}
        assert len(stored) == len(set(stored)), "a slug is stored twice"
        assert set(stored) == expected, (
            f"{account.username}: lost {sorted(expected - set(stored))}, "
            f"unanswered {sorted(set(stored) - expected)}"
        )
        total += len(stored)
    return total


_PROFILE_VERSION = text(
    "SELECT p.version FROM profile_documents p JOIN users u ON u.id = p.user_id"
    " WHERE u.username = :username"
)


def primary_version(primary: Engine, account: Account) -> int:
    """Read the version of the account's profile document in the primary: the newest."""
    with primary.connect() as connection:
        version: int = connection.execute(
            _PROFILE_VERSION, {"username": account.username}
        ).scalar_one()
    return version


def profile_versions(address: str, account: Account, reads: int) -> list[int]:
    """Read the public profile ``reads`` times (a connection each: any worker); return ETags."""
    versions = []
    for _ in range(reads):
        reply = api_request(address, "GET", f"/api/users/{account.username}/")
        assert reply.status == 200, reply
        versions.append(int((reply.headers.get("ETag") or "").strip('W/"')))
    return versions


def assert_settles_on_newest(
    address: str, account: Account, newest: int, within: float, steady_from: float = 0.0
) -> None:
    """Check the profile shows version ``newest`` within ``within`` s, and then only that.

    ``steady_from``: the monotonic time from which only ``newest`` may be
    served, if later than the first read of it (promise 4's bound, after a
    fault: until then one process may serve the newest from a replica while
    another still reads an entry the change relay has not repaired).
    """
    deadline = time.monotonic() + within
    while profile_versions(address, account, 1) != [newest]:
        assert time.monotonic() < deadline, f"{account.username}: not at {newest} in {within} s"
        time.sleep(0.05)
    time.sleep(max(0.0, steady_from - time.monotonic()))
    versions = profile_versions(address, account, 12)
    assert versions == [newest] * 12, (account.username, versions)


def serves_normally(address: str, account: Account) -> bool:
    """Tell whether every dependency is ready and a write and the writer's read succeed."""
    ready = attempt(address, "GET", "/readyz")
    if ready.reply is None or ready.status != 200 or json_body(ready.reply)["status"] != "ok":
        return False
    created = create_something(address, account, 0)
    if not created.acknowledged:
        return False
    assert created.reply is not None
    slug = json_body(created.reply)["slug"]
    read = attempt(address, "GET", f"/api/grids/{slug}/", token=account.token)
    return read.status == 200


def assert_recovered_in_place(rig: FaultRig, workers_before: list[int], account: Account) -> None:
    """Check the very same worker processes serve normally again: their pools recovered."""
    wait_for(lambda: serves_normally(rig.address, account), 20, "serving normally again")
    assert sorted(rig.server.worker_pids()) == sorted(workers_before), "a worker was replaced"


def replica_caught_up(rig: FaultRig) -> bool:
    """Tell whether replica1 has replayed everything the primary has written so far."""
    with rig.primary.connect() as connection:
        current: str = connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
    replica = create_engine(rig.layout.replica_urls[0], isolation_level="AUTOCOMMIT")
    try:
        with replica.connect() as connection:
            replayed = connection.execute(text("SELECT pg_last_wal_replay_lsn()::text")).scalar()
    except SQLAlchemyError:  # the replica may be stopped or starting
        return False
    finally:
        replica.dispose()
    return replayed is not None and parse_lsn(replayed) >= parse_lsn(current)


def replica_serves(rig: FaultRig, account: Account, reads: int = 1) -> bool:
    """Tell whether ``reads`` anonymous reads in a row (any worker) come from the replica."""
    for _ in range(reads):
        reply = api_request(rig.address, "GET", f"/api/grids/{account.grid}/")
        if reply.status != 200 or reply.headers.get(SOURCE) != "replica":
            return False
    return True


# --------------------------------------------------------------------------- faults


@contextmanager
def redis_frozen(layout: cluster.ClusterLayout) -> Iterator[None]:
    """Freeze Redis for the block: it holds its connections and answers nothing."""
    cluster.set_redis_frozen(layout, True)
    try:
        yield
    finally:
        cluster.set_redis_frozen(layout, False)


@contextmanager
def replay_delayed(layout: cluster.ClusterLayout, delay: str) -> Iterator[None]:
    """Hold back replica1's replay of each commit by ``delay`` (e.g. "3s") for the block.

    The block starts once replica1 has reloaded the setting.
    """
    cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", delay)
    try:
        wait_for_setting(layout.replica_urls[0], "recovery_min_apply_delay", delay)
        yield
    finally:
        cluster.set_replica_setting(layout, "replica1", "recovery_min_apply_delay", "0")


@contextmanager
def replay_paused(layout: cluster.ClusterLayout) -> Iterator[None]:
    """Pause replica1's replay for the block: its lag grows while writes go on."""
    cluster.set_replay_paused(layout, "replica1", True)
    try:
        yield
    finally:
        cluster.set_replay_paused(layout, "replica1", False)


@contextmanager
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """Open a Redis client of the test's own (to SAVE or FLUSHALL) for the block."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        client.close()


def cached_version(settings: Settings, username: str) -> int | None:
    """Read the profile version Redis holds for ``username`` (a client of the test's own)."""
    lifetime = RedisLifetime(settings.redis_url, socket_timeout=2, clock=time.monotonic)
    try:
        raw = lifetime.client.hget(lifetime.key("profile", username.lower()), "v")
    finally:
        lifetime.close()
    return None if raw is None else int(raw)


def assert_cache_settles_on_newest(
    address: str, settings: Settings, account: Account, newest: int, within: float
) -> None:
    """Check Redis holds version ``newest`` within ``within`` s, and then reads show only it."""
    wait_for(
        lambda: cached_version(settings, account.username) == newest,
        within,
        f"{account.username}: version {newest} in the cache",
    )
    versions = profile_versions(address, account, 12)
    assert versions == [newest] * 12, (account.username, versions)


# --------------------------------------------------------------------------- killing a worker


_WAITING_ON_A_LOCK = text(
    """
    SELECT client_port FROM pg_stat_activity
    WHERE application_name = 'gridlink' AND wait_event_type = 'Lock'
    """
)

_LOCK_PROFILE = text(
    """
    SELECT 1 FROM profile_documents p JOIN users u ON u.id = p.user_id
    WHERE u.username = :username FOR UPDATE OF p
    """
)


def _socket_inodes_by_local_port() -> dict[int, str]:
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            inodes[local_port] = fields[9]
    return inodes


def worker_with_connection_from(server: ApiServer, local_port: int) -> int | None:
    """Return the worker whose socket has ``local_port``: the one a database backend serves."""
    inode = _socket_inodes_by_local_port().get(local_port)
    if inode is None:
        return None
    for pid in server.worker_pids():
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(descriptor) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


@contextmanager
def writes_held_up(primary: Engine, account: Account) -> Iterator[Callable[[], list[int]]]:
    """Hold ``account``'s profile row locked, so their writes wait in mid-transaction.

    Yields a function returning the ports of the clients of every backend
    waiting on a lock (none yet: empty). The lock is released on leaving the block.
    """
    with primary.connect() as autocommitting:
        # The engine autocommits; the lock must outlive the statement.
        holder = autocommitting.execution_options(isolation_level="READ COMMITTED")
        holder.begin()
        holder.execute(_LOCK_PROFILE, {"username": account.username})

        def waiting_client_ports() -> list[int]:
            with primary.connect() as connection:
                return list(connection.execute(_WAITING_ON_A_LOCK).scalars())

        yield waiting_client_ports


def _worker_in_a_waiting_write(
    server: ApiServer, waiting_client_ports: Callable[[], list[int]], timeout: float
) -> int | None:
    """Return the worker whose write waits on the held lock, once one does (None: not in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in waiting_client_ports():
            pid = worker_with_connection_from(server, port)
            if pid is not None:
                return pid
        time.sleep(0.1)
    return None


def _is_gone(server: ApiServer, pid: int) -> bool:
    return pid not in server.worker_pids()


def kill_worker_in_mid_write(rig: FaultRig, account: Account, holds: int = 3) -> int:
    """SIGKILL the worker that is inside one of ``account``'s write transactions; return its pid.

    The account's profile row is held locked, so its next write waits inside
    its transaction; the worker whose connection that backend serves is the
    one killed. The lock is released after the kill. A hold that catches no
    write in time (a busy machine) is let go and taken again, up to ``holds`` times.
    """
    for _ in range(holds):
        with writes_held_up(rig.primary, account) as waiting_client_ports:
            # Under the 5 s statement_timeout, which would end the waiting write.
            victim = _worker_in_a_waiting_write(rig.server, waiting_client_ports, 4)
            if victim is None:
                continue
            os.kill(victim, signal.SIGKILL)
            wait_for(partial(_is_gone, rig.server, victim), 5, "the worker dies")
        return victim
    raise AssertionError(f"no write waited on the held lock in {holds} holds of 4 s")


def replace_every_worker(rig: FaultRig) -> None:
    """SIGKILL every worker and wait until gunicorn has started as many new ones."""
    old = rig.server.worker_pids()
    for pid in old:
        os.kill(pid, signal.SIGKILL)

    def replaced() -> bool:
        now = rig.server.worker_pids()
        return len(now) == len(old) and not set(now) & set(old)

    wait_for(replaced, 20, "new workers")
    wait_for(lambda: api_request(rig.address, "GET", "/healthz").status == 200, 20, "serving")


def write_row(primary: Engine) -> int:
    """Commit one row on the primary and return the primary's WAL position after it."""
    with primary.connect() as connection:
        connection.execute(text("INSERT INTO probe_rows (note) VALUES ('probe')"))
        lsn: str = connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
    return parse_lsn(lsn)


@contextmanager
def writes_flowing(primary: Engine, every: float = 0.2) -> Iterator[None]:
    """Commit a row on the primary every ``every`` seconds while the block runs."""
    stop = threading.Event()
    problems: list[Exception] = []

    def keep_writing() -> None:
        while not stop.wait(every):
            try:
                write_row(primary)
            except Exception as problem:
                problems.append(problem)
                return

    writer = threading.Thread(target=keep_writing, name="probe-writer", daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()
    assert not problems, problems


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def kill_primary(layout: cluster.ClusterLayout) -> int:
    """SIGKILL the primary's postmaster, as a crash would; return its pid once all is gone.

    Its backends notice their postmaster died and exit; the primary can be
    started again (crash recovery) only once the last of them has let go of
    the shared memory.
    """
    [primary] = [server for server in cluster.status(layout) if server.name == "primary"]
    postmaster = primary.pid
    assert postmaster is not None, "the primary is not running"
    forked = _children_of(postmaster)
    assert forked, "the primary has no backends: is it really its postmaster?"
    os.kill(postmaster, signal.SIGKILL)
    wait_for(
        lambda: not any(process_alive(pid, "postgres") for pid in [postmaster, *forked]),
        30,
        "the killed primary's processes are gone",
    )
    return postmaster


@contextmanager
def stopped(layout: cluster.ClusterLayout, name: str) -> Iterator[None]:
    cluster.stop_server(layout, name)
    try:
        yield
    finally:
        cluster.start_server(layout, name)
