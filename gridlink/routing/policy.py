"""The rotation policy: one probe round's facts in, roles, lag and read rotation out.

A pure function of the probes (no servers, no clock, no threads), so every
rule is unit-tested directly:

- **Roles come from the servers.** The server that is not in recovery is the
  primary; if two are (a failover's old primary not fenced yet), the one on
  the newer timeline (then the further WAL) is, and the other serves nothing.
- **A replica on an older timeline than the primary** is following a branch
  the cluster left: it is out of rotation until it has rejoined the new one.
- **Lag** is ``gridlink.routing.lag``'s rule against the primary's position; a
  replica leaves rotation past the bound and rejoins under half of it, so
  one hovering at the bound does not flap every second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gridlink.db.lsn import format_lsn
from gridlink.routing.lag import replica_lag_bytes, replica_lag_seconds
from gridlink.routing.probes import ProbeFacts

PRIMARY = "primary"
REPLICA = "replica"
SECOND_PRIMARY = "stray-primary"  # not in recovery, but not the primary the policy chose
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ServerProbe:
    """One configured server in one round: who it is, what it said, where it stood."""

    name: str
    host: str
    facts: ProbeFacts | None  # None: it did not answer within the deadline
    was_in_rotation: bool


@dataclass(frozen=True)
class PrimarySighting:
    """The primary's WAL position at a moment: a bound on what any replica missed."""

    lsn: int
    asked_at: float


@dataclass(frozen=True)
class ServerStatus:
    """Describe one database server as a probe round saw it (the monitoring view)."""

    name: str
    host: str  # "host:port", never the password
    reachable: bool
    in_rotation: bool = False
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    # How far its data reaches: a replica's replay position, the current WAL
    # position of a server out of recovery (API.md calls it replay_lsn).
    lsn: str | None = None
    role: str = UNREACHABLE
    timeline: int | None = None


@dataclass(frozen=True)
class RoundDecision:
    """What a round decided: every server's status, and which one is the primary."""

    servers: tuple[ServerStatus, ...]
    primary: ServerProbe | None

    @property
    def primary_status(self) -> ServerStatus | None:
        """Return the primary's status, or None when no server answered as one."""
        return next((s for s in self.servers if s.role == PRIMARY), None)


def stays_in_rotation(
    *, was_in_rotation: bool, lag_seconds: float | None, max_lag_seconds: float
) -> bool:
    """Decide whether a reachable replica with this lag serves reads after this round."""
    if lag_seconds is None:
        return False
    limit = max_lag_seconds if was_in_rotation else max_lag_seconds / 2
    return lag_seconds <= limit


def elect_primary(servers: Sequence[ServerProbe]) -> ServerProbe | None:
    """Return the server that answered as the primary; of two, the newer timeline's."""
    writable = [s for s in servers if s.facts is not None and not s.facts.in_recovery]
    if not writable:
        return None
    return max(writable, key=lambda s: _timeline_and_position(s.facts))


def _timeline_and_position(facts: ProbeFacts | None) -> tuple[int, int]:
    assert facts is not None
    return facts.timeline or 0, facts.current_lsn or 0


def staleness_bound(
    facts: ProbeFacts, history: Sequence[PrimarySighting], *, primary_answered: bool = True
) -> float | None:
    """Return the seconds since the primary was last seen at or before the replica's replay.

    Every commit acknowledged before that moment had a WAL position at or
    below the one the primary reported, so the replica has replayed it.

    When the primary did not answer this round (down, cut off, being
    replaced), the bound stops growing at its last sighting: this process
    acknowledges nothing through a primary it cannot reach, so a replica that
    had caught up with it then is as fresh as any answer the process could
    give, and reads go on from it (API.md, promise 6). A replica's receive
    position may stay ahead of its replay for good here: the stream can end
    in the middle of a record. Not covered: a primary cut off from this
    process but still acknowledging writes through another one.
    """
    if facts.replay_lsn is None or not history:
        return None
    until = facts.answered_at if primary_answered else history[-1].asked_at
    for seen in reversed(history):
        if seen.lsn <= facts.replay_lsn:
            return max(0.0, until - seen.asked_at)
    return None


def decide(
    servers: Sequence[ServerProbe],
    *,
    history: Sequence[PrimarySighting],
    max_lag_seconds: float,
) -> RoundDecision:
    """Turn one round of probes into each server's role, lag and place in rotation."""
    primary = elect_primary(servers)
    primary_facts = None if primary is None else primary.facts
    statuses = tuple(
        _status(server, primary, primary_facts, history, max_lag_seconds) for server in servers
    )
    return RoundDecision(servers=statuses, primary=primary)


def _status(
    server: ServerProbe,
    primary: ServerProbe | None,
    primary_facts: ProbeFacts | None,
    history: Sequence[PrimarySighting],
    max_lag_seconds: float,
) -> ServerStatus:
    facts = server.facts
    if facts is None:
        return ServerStatus(name=server.name, host=server.host, reachable=False)
    if not facts.in_recovery:
        position = facts.current_lsn
        return ServerStatus(
            name=server.name,
            host=server.host,
            reachable=True,
            lag_bytes=0 if server is primary else None,
            lag_seconds=0.0 if server is primary else None,
            lsn=None if position is None else format_lsn(position),
            role=PRIMARY if server is primary else SECOND_PRIMARY,
            timeline=facts.timeline,
        )
    primary_lsn = None if primary_facts is None else primary_facts.current_lsn
    replay = facts.replay_lsn
    lag_seconds = replica_lag_seconds(
        replay_lsn=replay,
        receive_lsn=facts.receive_lsn,
        primary_lsn=primary_lsn,
        seconds_since_replayed_commit=facts.seconds_since_replayed_commit,
        staleness_bound=staleness_bound(facts, history, primary_answered=primary is not None),
    )
    in_rotation = not on_an_older_timeline(facts, primary_facts) and stays_in_rotation(
        was_in_rotation=server.was_in_rotation,
        lag_seconds=lag_seconds,
        max_lag_seconds=max_lag_seconds,
    )
    return ServerStatus(
        name=server.name,
        host=server.host,
        reachable=True,
        in_rotation=in_rotation,
        lag_bytes=replica_lag_bytes(primary_lsn=primary_lsn, replay_lsn=replay),
        lag_seconds=lag_seconds,
        lsn=None if replay is None else format_lsn(replay),
        role=REPLICA,
        timeline=facts.timeline,
    )


def on_an_older_timeline(replica: ProbeFacts, primary: ProbeFacts | None) -> bool:
    """Tell whether a replica still follows a timeline the primary has left."""
    if primary is None or primary.timeline is None or replica.timeline is None:
        return False
    return replica.timeline < primary.timeline


def why_out(status: ServerStatus, primary: ServerStatus | None, max_lag_seconds: float) -> str:
    """Say in a few words why a server does not serve reads."""
    if not status.reachable:
        return "unreachable"
    if status.role == PRIMARY:
        return "it is the primary"
    if status.role == SECOND_PRIMARY:
        return "not in recovery, yet not the primary (an old primary not fenced yet?)"
    if primary is not None and (status.timeline or 0) < (primary.timeline or 0):
        return f"on timeline {status.timeline}, the primary on {primary.timeline}"
    if status.lag_seconds is None:
        return "lag unknown (nothing replayed yet)"
    return f"lag {status.lag_seconds:.1f} s over the {max_lag_seconds:g} s bound"
