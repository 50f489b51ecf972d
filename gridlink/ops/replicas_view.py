"""``gridlink replicas [--watch]``: the router's view of the cluster as a terminal table.

It probes with the settings directly, as a server process would, so an
operator on the host needs neither a browser nor a token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TextIO

from gridlink.cache.stream import StreamReport
from gridlink.ops.text_table import align_rows
from gridlink.routing.policy import PRIMARY
from gridlink.routing.router import ReplicaRouter, RouterSnapshot
from gridlink.web.logs import utc_timestamp

_RED = "\x1b[31m"
_RESET = "\x1b[0m"
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not environ.get("NO_COLOR")


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def format_stream(report: StreamReport) -> str:
    """Render the change stream's lag on one line."""
    if report.status != "ok":
        return f"change stream: {report.status.upper()} (fills from replicas live 1 s)"
    return (
        f"change stream: ok, applied {report.applied_lsn}, {report.lag_bytes} bytes and"
        f" {report.lag_seconds:.2f} s behind, {report.pending_changes} profiles pending"
    )


def format_snapshot(
    snapshot: RouterSnapshot, *, colour: bool, stream: StreamReport | None = None
) -> str:
    """Render the primary on one line, one aligned row per database server, then the stream.

    Each server shows the role it answers with and its timeline. A server that
    is not the primary and is out of rotation is red when ``colour`` is on; its
    ``no`` in the ROTATION column says the same without colour. The last change
    of primary this process saw follows the table.
    """
    checked = "never" if snapshot.checked_at is None else utc_timestamp(snapshot.checked_at)
    primary_state = (
        f"reachable, WAL at {snapshot.primary_lsn}, timeline {_dash(snapshot.primary_timeline)}"
        if snapshot.primary_reachable
        else "UNREACHABLE"
    )
    header = (
        f"primary {snapshot.primary_host}: {primary_state}"
        f"  (lag bound {snapshot.max_lag_seconds:g} s, checked {checked})"
    )
    rows = [
        (
            "SERVER",
            "HOST",
            "REACHABLE",
            "ROTATION",
            "LAG SECONDS",
            "LAG BYTES",
            "REPLAY LSN",
            "ROLE",
            "TIMELINE",
        )
    ]
    rows += [
        (
            server.name,
            server.host,
            _yes_no(server.reachable),
            _yes_no(server.in_rotation),
            "-" if server.lag_seconds is None else f"{server.lag_seconds:.2f}",
            _dash(server.lag_bytes),
            _dash(server.lsn),
            server.role,
            _dash(server.timeline),
        )
        for server in snapshot.servers
    ]
    lines = align_rows(rows)
    if colour:
        lines[1:] = [
            line if server.in_rotation or server.role == PRIMARY else f"{_RED}{line}{_RESET}"
            for line, server in zip(lines[1:], snapshot.servers, strict=True)
        ]
    if not snapshot.replicas:
        lines.append("(no replicas configured: every read goes to the primary)")
    failover = snapshot.last_failover
    if failover is not None:
        lines.append(
            f"last failover: {utc_timestamp(failover.at)}, {failover.old} -> {failover.new}"
            f" (timeline {_dash(failover.timeline)})"
        )
    if stream is not None:
        line = format_stream(stream)
        lines.append(line if not colour or stream.status == "ok" else f"{_RED}{line}{_RESET}")
    return "\n".join([header, *lines])


def watch(
    router: ReplicaRouter,
    out: TextIO,
    stopping: threading.Event,
    *,
    colour: bool,
    stream: Callable[[], StreamReport] | None = None,
    interval: float = 1.0,
) -> None:
    """Probe and redraw every ``interval`` seconds until ``stopping`` is set.

    ``gridlink replicas --watch`` sets it on Ctrl-C, so the frame being drawn
    finishes: a ``KeyboardInterrupt`` raised in the middle of a probe could
    leave a lock of the router or a connection pool held, and closing them
    afterwards would wait on it.
    """
    while not stopping.is_set():
        report = None if stream is None else stream()
        frame = format_snapshot(router.refresh(), colour=colour, stream=report)
        # A terminal is redrawn in place; a pipe or a file gets one frame after another.
        out.write(f"{_CLEAR_SCREEN}{frame}\n" if out.isatty() else f"{frame}\n\n")
        out.flush()
        stopping.wait(interval)
