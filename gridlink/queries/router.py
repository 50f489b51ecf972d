"""Decide which replica may serve a read: the per-process replica router.

Each server process keeps a small view of every replica: reachable or not,
replay LSN, lag in bytes and seconds. A daemon thread refreshes it about once
a second and swaps in a new immutable state object, so the request threads
read it without taking a lock. A replica that is unreachable, no longer in
recovery, or lagging past the bound leaves rotation at the next round; it
rejoins once its lag is back under half the bound, so a replica hovering at
the bound does not flap in and out every second.

Reads spread over the replicas in rotation (round robin). ``choose(min_lsn)``
only returns a replica that has replayed ``min_lsn`` (read your writes); when
it returns ``None`` the caller reads from the primary.

The thread starts on first use in the process that uses the router, and again
in a forked child (gunicorn workers), which inherits no thread.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from gridlink.lag import replica_lag_bytes, replica_lag_seconds
from gridlink.lsn import format_lsn, parse_lsn
from gridlink.tcp import dead_peer_options

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# A probe of a dead or blackholed server must not hold up the round: the
# server gives up on the statement after 500 ms, and the round stops waiting
# for any probe after _PROBE_DEADLINE_SECONDS (libpq rounds connect_timeout
# up to 2 s, so the deadline, not connect_timeout, bounds a slow connect).
_CONNECT_TIMEOUT_SECONDS = 1
_STATEMENT_TIMEOUT_MS = 500
_PROBE_DEADLINE_SECONDS = 0.8
# Drop an established connection whose peer stopped acknowledging, instead of
# waiting minutes for TCP to notice (statement_timeout is enforced server-side).
_TCP_USER_TIMEOUT_MS = 1000

_PRIMARY_PROBE = text("SELECT pg_current_wal_lsn()::text")
_REPLICA_PROBE = text(
    "SELECT pg_is_in_recovery(),"
    " pg_last_wal_receive_lsn()::text,"
    " pg_last_wal_replay_lsn()::text,"
    " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)


# --------------------------------------------------------------------------- rotation


def stays_in_rotation(
    *, was_in_rotation: bool, lag_seconds: float | None, max_lag_seconds: float
) -> bool:
    """Decide whether a reachable replica with this lag serves reads after this round.

    A replica leaves past the bound and rejoins under half of it, so one whose
    lag hovers around the bound does not flap every second.
    """
    if lag_seconds is None:
        return False
    limit = max_lag_seconds if was_in_rotation else max_lag_seconds / 2
    return lag_seconds <= limit


# --------------------------------------------------------------------------- the snapshot


@dataclass(frozen=True)
class ReplicaStatus:
    """Describe one replica as the last probe round saw it."""

    name: str  # "replica1", "replica2", ... in the order of the replica URLs
    host: str  # "host:port", never the password
    reachable: bool
    in_rotation: bool = False
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: str | None = None


@dataclass(frozen=True)
class RouterSnapshot:
    """Describe the primary and every replica as the last completed probe round saw them."""

    primary_host: str
    primary_reachable: bool
    primary_lsn: str | None
    replicas: tuple[ReplicaStatus, ...]
    checked_at: datetime | None  # UTC end of the last round; None before the first one
    max_lag_seconds: float

    @property
    def in_rotation(self) -> tuple[str, ...]:
        """Return the names of the replicas that serve reads."""
        return tuple(replica.name for replica in self.replicas if replica.in_rotation)


@dataclass(frozen=True)
class _RoutingState:
    """Hold what choose() needs, replaced whole by each probe round."""

    snapshot: RouterSnapshot
    rotation: tuple[int, ...]  # indexes of the replicas in rotation
    replay_lsns: tuple[int | None, ...]
    completed_at: float  # time.monotonic() at the end of the round; -inf before the first


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class _PrimaryAnswer:
    current_lsn: int
    asked_at: float  # monotonic time just before the query was sent


@dataclass(frozen=True)
class _ReplicaAnswer:
    in_recovery: bool
    receive_lsn: int | None
    replay_lsn: int | None
    seconds_since_replayed_commit: float | None
    answered_at: float  # monotonic time the answer arrived


def _optional_lsn(lsn: str | None) -> int | None:
    return None if lsn is None else parse_lsn(lsn)


def _probe_primary(engine: Engine) -> _PrimaryAnswer | None:
    """Ask the primary for its current WAL position; None if it cannot answer."""
    try:
        with engine.connect() as connection:
            asked_at = time.monotonic()
            current: str = connection.execute(_PRIMARY_PROBE).scalar_one()
    except SQLAlchemyError as problem:
        _forget_connection(engine, problem)
        return None
    return _PrimaryAnswer(parse_lsn(current), asked_at)


def _probe_replica(engine: Engine) -> _ReplicaAnswer | None:
    """Ask a replica how far it has received and replayed; None if it cannot answer."""
    try:
        with engine.connect() as connection:
            row: tuple[Any, ...] = tuple(connection.execute(_REPLICA_PROBE).one())
            answered_at = time.monotonic()
    except SQLAlchemyError as problem:
        _forget_connection(engine, problem)
        return None
    in_recovery, receive, replay, since_commit = row
    return _ReplicaAnswer(
        bool(in_recovery), _optional_lsn(receive), _optional_lsn(replay), since_commit, answered_at
    )


def _forget_connection(engine: Engine, problem: SQLAlchemyError) -> None:
    # Whatever went wrong, the next round starts from a fresh connection rather
    # than trusting the driver to have recognised a broken one.
    logger.debug("probe of %s failed: %s", engine.url.render_as_string(), problem)
    engine.dispose()


def _probe_engine(url: str) -> Engine:
    """Create an engine of one persistent connection with the probe's short timeouts."""
    return create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=_PROBE_DEADLINE_SECONDS,
        isolation_level="AUTOCOMMIT",  # no BEGIN/ROLLBACK round trips around the probe
        hide_parameters=True,
        connect_args={
            "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            "application_name": "gridlink-router",
            **dead_peer_options(_TCP_USER_TIMEOUT_MS),
        },
    )


def _host_of(url: str) -> str:
    parsed = make_url(url)
    host = parsed.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parsed.port or 5432}"


class _Probes:
    """Hold one process's probe engines, probe threads and recent primary positions."""

    def __init__(
        self, primary_url: str, replica_urls: Sequence[str], history_seconds: float
    ) -> None:
        self.primary = _probe_engine(primary_url)
        self.replicas = [_probe_engine(url) for url in replica_urls]
        # One thread per server, so a slow server never queues behind another.
        self.executor = ThreadPoolExecutor(
            max_workers=len(self.replicas) + 1, thread_name_prefix="gridlink-router-probe"
        )
        # The previous probe of each server, which may still be running past its deadline.
        self.primary_in_flight: Future[_PrimaryAnswer | None] | None = None
        self.replicas_in_flight: list[Future[_ReplicaAnswer | None] | None] = [
            None for _ in self.replicas
        ]
        self.history_seconds = history_seconds
        self.primary_history: deque[_PrimaryAnswer] = deque()

    def remember(self, answer: _PrimaryAnswer) -> None:
        """Keep the primary's position for staleness_bound(), dropping old ones."""
        self.primary_history.append(answer)
        horizon = answer.asked_at - self.history_seconds
        while self.primary_history and self.primary_history[0].asked_at < horizon:
            self.primary_history.popleft()

    def staleness_bound(self, replica: _ReplicaAnswer) -> float | None:
        """Return the seconds since the primary was last seen at or before the replica's replay.

        Every commit acknowledged before that moment had a WAL position at or
        below the one the primary reported, so the replica has replayed it.
        """
        if replica.replay_lsn is None:
            return None
        for seen in reversed(self.primary_history):
            if seen.current_lsn <= replica.replay_lsn:
                return max(0.0, replica.answered_at - seen.asked_at)
        return None

    def close(self) -> None:
        """Stop the probe threads and close the probe connections."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.primary.dispose()
        for engine in self.replicas:
            engine.dispose()

    def abandon(self) -> None:
        """Let go of what a parent process left behind, without touching its connections."""
        # The executor's threads do not exist in a forked child; its connections
        # belong to the parent, so they are dropped rather than closed.
        self.primary.dispose(close=False)
        for engine in self.replicas:
            engine.dispose(close=False)


def _result(future: Future[_T] | None) -> _T | None:
    if future is None or not future.done() or future.cancelled():
        return None
    problem = future.exception()
    if problem is not None:
        logger.error("replica router probe crashed", exc_info=problem)
        return None
    return future.result()


# --------------------------------------------------------------------------- the router


class ReplicaRouter:
    """Keep this process's view of the replicas and pick one for each read."""

    def __init__(
        self,
        primary_url: str,
        replica_urls: Sequence[str],
        max_lag_seconds: float,
        interval: float = 1.0,
    ) -> None:
        self._primary_url = primary_url
        self._replica_urls = tuple(replica_urls)
        self._max_lag_seconds = max_lag_seconds
        self._interval = interval
        self._names = tuple(f"replica{index}" for index in range(1, len(self._replica_urls) + 1))
        self._hosts = tuple(_host_of(url) for url in self._replica_urls)
        self._primary_host = _host_of(primary_url)
        # A healthy thread renews the view every interval (a round takes at most
        # the deadline); an older view means it is stuck, and reads then go to
        # the primary rather than trusting a rotation nobody checks any more.
        self._stale_after = 2 * interval + _PROBE_DEADLINE_SECONDS
        self._turns = itertools.count()
        self._state = self._blank_state()
        self._lifecycle_lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._probes: _Probes | None = None
        # A child forked while another thread held a lock would inherit it held forever.
        os.register_at_fork(
            after_in_child=functools.partial(_renew_locks_after_fork, weakref.ref(self))
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the probe thread in this process unless it already runs."""
        self._start(explicit=True)

    def stop(self) -> None:
        """Stop the probe thread, wait for it, and close the probe connections.

        Until start() is called again the router does not start itself, and
        choose() answers None: with nobody watching the replicas, reads go to
        the primary.
        """
        with self._lifecycle_lock:
            self._adopt_process()
            self._stopped = True
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None:
            thread.join()
        with self._round_lock:
            if self._probes is not None:
                self._probes.close()
                self._probes = None
            self._state = self._blank_state()

    def _start(self, *, explicit: bool) -> None:
        with self._lifecycle_lock:
            self._adopt_process()
            if self._stopped and not explicit:
                return
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopped = False
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name="gridlink-router", daemon=True
            )
            self._thread.start()

    def _ensure_running(self) -> None:
        thread = self._thread
        if self._pid == os.getpid() and (
            self._stopped or (thread is not None and thread.is_alive())
        ):
            return
        self._start(explicit=False)

    def _adopt_process(self) -> None:
        """Forget what a parent process left behind, once, in a forked child."""
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        self._thread = None  # the parent's thread does not exist in this process
        self._stopped = False  # the parent's stop() was about the parent's thread
        if self._probes is not None:
            self._probes.abandon()
            self._probes = None
        self._state = self._blank_state()

    def _run(self, stopping: threading.Event) -> None:
        next_round = time.monotonic()
        while not stopping.is_set():
            try:
                self.refresh()
            except Exception:
                # One bad round must not end the thread: the view would freeze.
                logger.exception("replica router probe round failed")
            next_round += self._interval
            now = time.monotonic()
            if next_round < now:  # fell behind: start again from now rather than burst
                next_round = now
            stopping.wait(next_round - now)

    # ----------------------------------------------------------------- reads

    def snapshot(self) -> RouterSnapshot:
        """Return the view of the last completed probe round, starting the thread if needed."""
        self._ensure_running()
        return self._state.snapshot

    def choose(self, min_lsn: int | None = None) -> int | None:
        """Return the index (in replica_urls) of a replica to read from, or None for the primary.

        Only replicas in rotation whose replay LSN, as of the last probe, is at
        least ``min_lsn`` are candidates; they take turns.
        """
        chosen = self.choose_with_position(min_lsn)
        return None if chosen is None else chosen[0]

    def choose_with_position(self, min_lsn: int | None = None) -> tuple[int, int] | None:
        """Choose as ``choose`` does; also return the replica's replay LSN at the last probe.

        The probe ran before the caller's query, so the position is never past
        the snapshot the query will read (0 when the probe did not say).
        """
        self._ensure_running()
        state = self._state
        if time.monotonic() - state.completed_at > self._stale_after:
            return None
        candidates = state.rotation
        if min_lsn is not None:
            candidates = tuple(
                index
                for index in candidates
                if (replay := state.replay_lsns[index]) is not None and replay >= min_lsn
            )
        if not candidates:
            return None
        index = candidates[next(self._turns) % len(candidates)]
        return index, state.replay_lsns[index] or 0

    def refresh_if_blind(self) -> None:
        """Probe now, in the caller's thread, unless a recent round gave a view.

        A process that has just started (a new gunicorn worker) has no view
        for its first round: normally its reads go to the primary meanwhile,
        but with the primary down the replicas are all there is, so a read
        waits one round (at most the probe deadline) rather than failing.
        """
        self._ensure_running()
        if time.monotonic() - self._state.completed_at > self._stale_after:
            self.refresh()

    # ----------------------------------------------------------------- probing

    def refresh(self) -> RouterSnapshot:
        """Probe the primary and every replica once, concurrently, and install the new view."""
        with self._round_lock:
            with self._lifecycle_lock:
                self._adopt_process()
            probes = self._probes
            if probes is None:
                probes = self._probes = _Probes(
                    self._primary_url, self._replica_urls, self._history_seconds
                )
            primary_answer, replica_answers = self._probe_all(probes)
            state = self._next_state(probes, primary_answer, replica_answers)
            self._log_changes(self._state.snapshot, state.snapshot)
            self._state = state
            return state.snapshot

    @property
    def _history_seconds(self) -> float:
        # Enough past primary positions to bound any lag up to twice the limit.
        return 2 * self._max_lag_seconds + 2 * self._interval

    def _probe_all(
        self, probes: _Probes
    ) -> tuple[_PrimaryAnswer | None, list[_ReplicaAnswer | None]]:
        """Run one probe per server at once and keep the answers that beat the deadline.

        A server whose previous probe is still running is not asked again (no
        pile-up of stuck connections); it counts as unreachable meanwhile.
        """
        submitted: list[Future[Any]] = []
        primary_future: Future[_PrimaryAnswer | None] | None = None
        previous = probes.primary_in_flight
        if previous is None or previous.done():
            primary_future = probes.executor.submit(_probe_primary, probes.primary)
            probes.primary_in_flight = primary_future
            submitted.append(primary_future)
        replica_futures: list[Future[_ReplicaAnswer | None] | None] = []
        for index, engine in enumerate(probes.replicas):
            future = probes.replicas_in_flight[index]
            if future is None or future.done():
                future = probes.executor.submit(_probe_replica, engine)
                probes.replicas_in_flight[index] = future
                submitted.append(future)
                replica_futures.append(future)
            else:
                replica_futures.append(None)
        wait_for(submitted, timeout=_PROBE_DEADLINE_SECONDS)
        return _result(primary_future), [_result(future) for future in replica_futures]

    def _next_state(
        self,
        probes: _Probes,
        primary: _PrimaryAnswer | None,
        answers: list[_ReplicaAnswer | None],
    ) -> _RoutingState:
        if primary is not None:
            probes.remember(primary)
        primary_lsn = None if primary is None else primary.current_lsn
        previous = self._state.snapshot.replicas
        statuses: list[ReplicaStatus] = []
        for index, answer in enumerate(answers):
            was_in_rotation = previous[index].in_rotation or self._state.snapshot.checked_at is None
            statuses.append(
                self._replica_status(index, answer, primary_lsn, probes, was_in_rotation)
            )
        snapshot = RouterSnapshot(
            primary_host=self._primary_host,
            primary_reachable=primary is not None,
            primary_lsn=None if primary_lsn is None else format_lsn(primary_lsn),
            replicas=tuple(statuses),
            checked_at=datetime.now(UTC),
            max_lag_seconds=self._max_lag_seconds,
        )
        return _RoutingState(
            snapshot=snapshot,
            rotation=tuple(i for i, status in enumerate(statuses) if status.in_rotation),
            replay_lsns=tuple(None if a is None else a.replay_lsn for a in answers),
            completed_at=time.monotonic(),
        )

    def _replica_status(
        self,
        index: int,
        answer: _ReplicaAnswer | None,
        primary_lsn: int | None,
        probes: _Probes,
        was_in_rotation: bool,
    ) -> ReplicaStatus:
        name, host = self._names[index], self._hosts[index]
        if answer is None:
            return _unreachable(name, host)
        replay = answer.replay_lsn
        replay_text = None if replay is None else format_lsn(replay)
        if not answer.in_recovery:
            # Promoted or never a replica: its data is not the primary's any more.
            return ReplicaStatus(name=name, host=host, reachable=True, replay_lsn=replay_text)
        lag_bytes = replica_lag_bytes(primary_lsn=primary_lsn, replay_lsn=replay)
        lag_seconds = replica_lag_seconds(
            replay_lsn=replay,
            receive_lsn=answer.receive_lsn,
            primary_lsn=primary_lsn,
            seconds_since_replayed_commit=answer.seconds_since_replayed_commit,
            staleness_bound=probes.staleness_bound(answer),
        )
        in_rotation = stays_in_rotation(
            was_in_rotation=was_in_rotation,
            lag_seconds=lag_seconds,
            max_lag_seconds=self._max_lag_seconds,
        )
        return ReplicaStatus(
            name=name,
            host=host,
            reachable=True,
            in_rotation=in_rotation,
            lag_bytes=lag_bytes,
            lag_seconds=lag_seconds,
            replay_lsn=replay_text,
        )

    def _log_changes(self, before: RouterSnapshot, after: RouterSnapshot) -> None:
        """Log each replica that left or joined rotation, and the primary coming and going."""
        first_round = before.checked_at is None
        if before.primary_reachable != after.primary_reachable and not (
            first_round and after.primary_reachable
        ):
            if after.primary_reachable:
                logger.info("primary %s is reachable again", after.primary_host)
            else:
                logger.warning("primary %s is unreachable", after.primary_host)
        for old, new in zip(before.replicas, after.replicas, strict=True):
            if new.in_rotation and not old.in_rotation and not first_round:
                logger.info(
                    "%s (%s) rejoined read rotation: lag %.1f s",
                    new.name,
                    new.host,
                    new.lag_seconds or 0.0,
                )
            elif not new.in_rotation and (old.in_rotation or first_round):
                logger.warning(
                    "%s (%s) is out of read rotation: %s", new.name, new.host, self._why_out(new)
                )

    def _why_out(self, status: ReplicaStatus) -> str:
        if not status.reachable:
            return "unreachable"
        if status.lag_seconds is None:
            return "lag unknown (not in recovery, or nothing replayed yet)"
        return f"lag {status.lag_seconds:.1f} s over the {self._max_lag_seconds:g} s bound"

    def _blank_state(self) -> _RoutingState:
        """Return the view before any probe: nothing reachable, every read on the primary."""
        replicas = tuple(
            _unreachable(name, host) for name, host in zip(self._names, self._hosts, strict=True)
        )
        snapshot = RouterSnapshot(
            primary_host=self._primary_host,
            primary_reachable=False,
            primary_lsn=None,
            replicas=replicas,
            checked_at=None,
            max_lag_seconds=self._max_lag_seconds,
        )
        return _RoutingState(snapshot, (), tuple(None for _ in replicas), float("-inf"))


def _unreachable(name: str, host: str) -> ReplicaStatus:
    return ReplicaStatus(name=name, host=host, reachable=False)


def _renew_locks_after_fork(router_ref: weakref.ref[ReplicaRouter]) -> None:
    router = router_ref()
    if router is not None:
        router._lifecycle_lock = threading.Lock()
        router._round_lock = threading.Lock()
