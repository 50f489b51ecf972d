"""The per-process replica router: a probe thread, its latest view, and a choice per read.

Each server process keeps a small view of every configured database server:
its role, timeline, replay position and lag. A daemon thread refreshes it
about once a second (``probes``), decides roles and rotation
(``policy.decide``) and swaps in a new immutable state, so request threads
read it without taking a lock.

Reads spread over the replicas in rotation (round robin). ``choose(written)``
hands out a ``Replica`` (name, engine, replay position at the last probe)
that has replayed ``written`` on its own timeline (read your writes);
``None`` means: read from the primary.

The thread starts on first use. A router serves the process that built it:
gunicorn builds one per worker, after the fork (``preload_app`` is off), and
a forked child that tries to use its parent's router gets an error rather
than the parent's probe connections.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine

from gridlink.db.lsn import Position
from gridlink.db.urls import server_urls
from gridlink.routing.policy import (
    PRIMARY,
    PrimarySighting,
    RoundDecision,
    ServerProbe,
    ServerStatus,
    decide,
    why_out,
)
from gridlink.routing.probes import PROBE_DEADLINE_SECONDS, ProbeFacts, host_of, probe, probe_engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failover:
    """A change of primary this process saw: when, from which server to which."""

    at: datetime
    old: str  # "name (host)"
    new: str
    timeline: int | None


@dataclass(frozen=True)
class RouterSnapshot:
    """Describe every database server as the last completed probe round saw it."""

    primary_host: str
    primary_reachable: bool
    primary_lsn: str | None
    servers: tuple[ServerStatus, ...]
    checked_at: datetime | None  # UTC end of the last round; None before the first one
    max_lag_seconds: float
    primary_timeline: int | None = None
    last_failover: Failover | None = None

    @property
    def replicas(self) -> tuple[ServerStatus, ...]:
        """Return every server but the primary, in configured order."""
        return tuple(server for server in self.servers if server.role != PRIMARY)

    @property
    def in_rotation(self) -> tuple[str, ...]:
        """Return the names of the replicas that serve reads."""
        return tuple(server.name for server in self.servers if server.in_rotation)


@dataclass(frozen=True)
class Replica:
    """A replica a read may use: its name, its pooled engine, what the last probe saw."""

    name: str
    host: str
    engine: Engine
    replay_lsn: int  # never past the snapshot a query started after the probe reads
    timeline: int | None

    @property
    def position(self) -> Position:
        """Return the replay position on its timeline (timeline 0: unknown, proves nothing)."""
        return Position(self.timeline or 0, self.replay_lsn)


@dataclass(frozen=True)
class _Server:
    name: str
    host: str
    url: str
    engine: Engine  # the pooled engine reads use


@dataclass(frozen=True)
class _RoutingState:
    """Hold what choose() needs, replaced whole by each probe round."""

    snapshot: RouterSnapshot
    rotation: tuple[Replica, ...]
    completed_at: float  # time.monotonic() at the end of the round; -inf before the first


def configured_servers(primary_url: str, replica_urls: Sequence[str]) -> list[tuple[str, str]]:
    """Name every server the settings list: ``replica<k>`` in replica order, then the rest.

    Hosts of the primary URL that are not replicas already are ``primary`` (or
    ``primary<k>`` when it lists several); their role is still whatever they answer.
    """
    named = [(f"replica{k}", url) for k, url in enumerate(replica_urls, start=1)]
    known = {host_of(url) for _name, url in named}
    extra = [url for url in server_urls(primary_url) if host_of(url) not in known]
    for k, url in enumerate(extra, start=1):
        named.append(("primary" if len(extra) == 1 else f"primary{k}", url))
    return named


class _Probes:
    """Hold one process's probe engines, probe threads and recent primary positions."""

    def __init__(self, servers: Sequence[_Server], history_seconds: float) -> None:
        self.engines = {server.name: probe_engine(server.url) for server in servers}
        # One thread per server, so a slow server never queues behind another.
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, len(servers)), thread_name_prefix="gridlink-router-probe"
        )
        # The previous probe of each server, which may still be running past its deadline.
        self.in_flight: dict[str, Future[ProbeFacts | None]] = {}
        self.history_seconds = history_seconds
        self.history: deque[PrimarySighting] = deque()
        self.history_timeline: int | None = None

    def probe_all(self) -> dict[str, ProbeFacts | None]:
        """Run one probe per server at once and keep the answers that beat the deadline.

        A server whose previous probe is still running is not asked again (no
        pile-up of stuck connections); it counts as unreachable meanwhile.
        """
        submitted: dict[str, Future[ProbeFacts | None]] = {}
        for name, engine in self.engines.items():
            previous = self.in_flight.get(name)
            if previous is None or previous.done():
                submitted[name] = self.in_flight[name] = self.executor.submit(probe, engine)
        wait_for(submitted.values(), timeout=PROBE_DEADLINE_SECONDS)
        return {name: _result(submitted.get(name)) for name in self.engines}

    def remember(self, primary: ProbeFacts) -> None:
        """Keep the primary's position for the staleness bound, dropping old ones.

        Positions of another timeline say nothing about this one's: a new
        primary starts the history again.
        """
        if primary.current_lsn is None:
            return
        if primary.timeline != self.history_timeline:
            self.history.clear()
            self.history_timeline = primary.timeline
        self.history.append(PrimarySighting(primary.current_lsn, primary.asked_at))
        horizon = primary.asked_at - self.history_seconds
        while self.history and self.history[0].asked_at < horizon:
            self.history.popleft()

    def close(self) -> None:
        """Stop the probe threads and close the probe connections."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        for engine in self.engines.values():
            engine.dispose()


def _result(future: Future[ProbeFacts | None] | None) -> ProbeFacts | None:
    if future is None or not future.done() or future.cancelled():
        return None
    problem = future.exception()
    if problem is not None:
        logger.error("replica router probe crashed", exc_info=problem)
        return None
    return future.result()


class ReplicaRouter:
    """Keep this process's view of the database servers and pick a replica for each read."""

    def __init__(
        self,
        primary_url: str,
        replica_urls: Sequence[str],
        max_lag_seconds: float,
        interval: float = 1.0,
        *,
        engine_factory: Callable[[str], Engine] = create_engine,
    ) -> None:
        self._primary_url = primary_url
        self._servers = tuple(
            _Server(name, host_of(url), url, engine_factory(url))
            for name, url in configured_servers(primary_url, replica_urls)
        )
        self._max_lag_seconds = max_lag_seconds
        self._interval = interval
        self._write_hosts = ",".join(host_of(url) for url in server_urls(primary_url))
        # A healthy thread renews the view every interval (a round takes at most
        # the deadline); an older view means it is stuck, and reads then go to
        # the primary rather than trusting a rotation nobody checks any more.
        self._stale_after = 2 * interval + PROBE_DEADLINE_SECONDS
        self._turns = itertools.count()
        self._last_primary: ServerStatus | None = None
        self._last_failover: Failover | None = None
        self._state = self._blank_state()
        self._lifecycle_lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._probes: _Probes | None = None

    @property
    def read_engines(self) -> tuple[Engine, ...]:
        """Return the pooled engine of every configured server (reads use them as replicas)."""
        return tuple(server.engine for server in self._servers)

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

    def close(self) -> None:
        """Stop probing and close every read engine's pooled connections."""
        self.stop()
        for server in self._servers:
            server.engine.dispose()

    def _start(self, *, explicit: bool) -> None:
        self._require_own_process()
        with self._lifecycle_lock:
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
        self._require_own_process()
        thread = self._thread
        if self._stopped or (thread is not None and thread.is_alive()):
            return
        self._start(explicit=False)

    def _require_own_process(self) -> None:
        """Refuse to serve a forked child: it would probe on its parent's connections."""
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"this replica router belongs to process {self._pid}: build one in each"
                " process after forking (gunicorn: keep preload_app off)"
            )

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

    def choose(self, written: Position | None = None) -> Replica | None:
        """Return a replica to read from, or None for the primary.

        Only replicas in rotation that, as of the last probe, have replayed
        ``written`` on its own timeline are candidates; they take turns. A
        replica on another timeline is none: after a failover the same LSN
        may belong to a branch that was lost, so a writer's reads go to the
        primary until their mark expires or they write on the new timeline.
        """
        self._ensure_running()
        state = self._state
        if time.monotonic() - state.completed_at > self._stale_after:
            return None
        candidates = state.rotation
        if written is not None:
            candidates = tuple(
                replica for replica in candidates if replica.position.proves(written)
            )
        if not candidates:
            return None
        return candidates[next(self._turns) % len(candidates)]

    def connect_order(self) -> tuple[str, ...]:
        """Return the database hosts (``host:port``) in the order a new write connection tries them.

        The primary the last round found comes first, the other reachable
        servers next, the unreachable last: after a failover a new
        connection reaches the new primary at once instead of waiting out a
        connect timeout on a host that is down or cut off. Empty before the
        first round (the configured order then stands). Never starts the
        probe thread: it only reads the view a running router keeps.
        """
        snapshot = self._state.snapshot
        if snapshot.checked_at is None:
            return ()
        ranked = sorted(
            snapshot.servers,
            key=lambda server: (server.role != PRIMARY, not server.reachable),
        )
        return tuple(server.host for server in ranked)

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
        """Probe every server once, concurrently, and install the new view."""
        self._require_own_process()
        with self._round_lock:
            probes = self._probes
            if probes is None:
                probes = self._probes = _Probes(self._servers, self._history_seconds)
            answers = probes.probe_all()
            state = self._next_state(probes, answers)
            self._log_changes(self._state.snapshot, state.snapshot)
            self._state = state
            return state.snapshot

    @property
    def _history_seconds(self) -> float:
        # Enough past primary positions to bound any lag up to twice the limit.
        return 2 * self._max_lag_seconds + 2 * self._interval

    def _next_state(self, probes: _Probes, answers: dict[str, ProbeFacts | None]) -> _RoutingState:
        previous = self._state.snapshot
        first_round = previous.checked_at is None
        was_in = {server.name: server.in_rotation or first_round for server in previous.servers}
        decision = decide(
            [
                ServerProbe(server.name, server.host, answers[server.name], was_in[server.name])
                for server in self._servers
            ],
            history=tuple(probes.history),
            max_lag_seconds=self._max_lag_seconds,
        )
        if decision.primary is not None and decision.primary.facts is not None:
            probes.remember(decision.primary.facts)
        primary = decision.primary_status
        self._notice_failover(primary)
        snapshot = RouterSnapshot(
            primary_host=self._write_hosts if primary is None else primary.host,
            primary_reachable=primary is not None,
            primary_lsn=None if primary is None else primary.lsn,
            servers=decision.servers,
            checked_at=datetime.now(UTC),
            max_lag_seconds=self._max_lag_seconds,
            primary_timeline=None if primary is None else primary.timeline,
            last_failover=self._last_failover,
        )
        return _RoutingState(
            snapshot=snapshot,
            rotation=self._rotation(decision, answers),
            completed_at=time.monotonic(),
        )

    def _rotation(
        self, decision: RoundDecision, answers: dict[str, ProbeFacts | None]
    ) -> tuple[Replica, ...]:
        rotation = []
        for server, status in zip(self._servers, decision.servers, strict=True):
            facts = answers[server.name]
            if status.in_rotation and facts is not None:
                rotation.append(
                    Replica(
                        server.name,
                        server.host,
                        server.engine,
                        facts.replay_lsn or 0,
                        facts.timeline,
                    )
                )
        return tuple(rotation)

    def _notice_failover(self, primary: ServerStatus | None) -> None:
        """Remember when another server (or a newer timeline) became the primary."""
        if primary is None:
            return
        last = self._last_primary
        self._last_primary = primary
        if last is None or (last.name == primary.name and last.timeline == primary.timeline):
            return
        self._last_failover = Failover(
            at=datetime.now(UTC),
            old=f"{last.name} ({last.host})",
            new=f"{primary.name} ({primary.host})",
            timeline=primary.timeline,
        )
        logger.warning(
            "the primary is now %s on timeline %s (was %s on timeline %s)",
            self._last_failover.new,
            primary.timeline,
            self._last_failover.old,
            last.timeline,
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
                logger.warning("no server answers as the primary (%s)", after.primary_host)
        primary = next((s for s in after.servers if s.role == PRIMARY), None)
        for old, new in zip(before.servers, after.servers, strict=True):
            if new.in_rotation and not old.in_rotation and not first_round:
                logger.info(
                    "%s (%s) rejoined read rotation: lag %.1f s",
                    new.name,
                    new.host,
                    new.lag_seconds or 0.0,
                )
            elif new.role != PRIMARY and not new.in_rotation and (old.in_rotation or first_round):
                logger.warning(
                    "%s (%s) is out of read rotation: %s",
                    new.name,
                    new.host,
                    why_out(new, primary, self._max_lag_seconds),
                )

    def _blank_state(self) -> _RoutingState:
        """Return the view before any probe: nothing reachable, every read on the primary."""
        snapshot = RouterSnapshot(
            primary_host=self._write_hosts,
            primary_reachable=False,
            primary_lsn=None,
            servers=tuple(
                ServerStatus(name=server.name, host=server.host, reachable=False)
                for server in self._servers
            ),
            checked_at=None,
            max_lag_seconds=self._max_lag_seconds,
            last_failover=self._last_failover,
        )
        return _RoutingState(snapshot, (), float("-inf"))
