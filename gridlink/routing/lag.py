"""Replica lag from probe facts: one rule for the replica router and the cluster drivers.

Both ask a replica for its replay and receive positions and the age of the
last commit it replayed, and ask the primary for its current position; this
module turns those facts into lag, so the two can never disagree.
"""

from __future__ import annotations


def replica_lag_bytes(*, primary_lsn: int | None, replay_lsn: int | None) -> int | None:
    """Return how many WAL bytes a replica has still to replay, or None if unknown.

    The primary may be asked a moment before the replica, so never negative.
    """
    if primary_lsn is None or replay_lsn is None:
        return None
    return max(0, primary_lsn - replay_lsn)


def replica_lag_seconds(
    *,
    replay_lsn: int | None,
    receive_lsn: int | None,
    primary_lsn: int | None,
    seconds_since_replayed_commit: float | None,
    staleness_bound: float | None = None,
) -> float | None:
    """Return how many seconds a replica's data is behind the primary, or None if unknown.

    LSNs come first, as in postgres_exporter, so the lag does not grow on an
    idle primary: a replica that has replayed the primary's current position
    is 0 s behind. When the primary cannot be asked, a replica that has
    replayed everything it received counts as 0 s behind (``>=``: after a
    restart the walreceiver reports a receive position at the start of a WAL
    segment, behind replay). With a reachable primary that comparison is not
    used, since a replica whose WAL stream broke has also replayed all it
    received while falling ever further behind.

    Otherwise the lag is the smaller of two upper bounds: the age of the last
    commit the replica replayed (it alone overstates the lag when the only
    WAL pending is not a commit, after a long idle spell), and
    ``staleness_bound``, the time since the primary was last seen at a
    position the replica has since replayed.
    """
    if replay_lsn is None:
        return None
    if primary_lsn is not None:
        if replay_lsn >= primary_lsn:
            return 0.0
    elif receive_lsn is not None and replay_lsn >= receive_lsn:
        return 0.0
    bounds = [
        max(0.0, bound)
        for bound in (seconds_since_replayed_commit, staleness_bound)
        if bound is not None
    ]
    return min(bounds) if bounds else None
