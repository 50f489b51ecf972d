"""``make chaos``: random host kills, partitions and switchovers on staging, under traffic.

Steps, each announced on stdout:

1. ``gridlink staging up --seed CHAOS_SEED_USERS`` (idempotent);
2. writers (``loadtest/writers.py``: every grid under its own
   ``Idempotency-Key``, retried until acknowledged) and readers of public
   profiles run through the load balancer for ``CHAOS_SECONDS``;
3. meanwhile, one fault at a time, drawn at random (``CHAOS_RANDOM_SEED``):
   the primary's host killed, the primary's link cut, a planned switchover,
   the Redis master's host killed, the synchronous standby's host
   killed, or a load balancer's host killed (the one holding the floating
   address, or the other); each is healed (the host booted again with ``staging up``, the
   link restored) once writes are back, and the next waits until staging
   is whole again (``hosts.failover_ready``);
   meanwhile Prometheus (on the monitoring host) is asked every second
   which alerts fire: a host kill is held until one fires (at most
   ``ALERT_DEADLINE_SECONDS``), and each fault's line says which fired and
   which had resolved by the time staging was whole again: a fault that
   fires nothing is a missing rule;
4. the table: faults, seconds without writes (p50, max), acknowledged
   writes, lost writes (acknowledged but not on the primary: must be 0),
   503 answers to writes (the contract's while no primary accepts writes),
   other 5xx answers to writes and any 5xx answer to a read (must be 0:
   reads go on from replicas and the cache while there is no primary).

Exit status 1 when a write was lost, another 5xx was answered or a fault fired no alert.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from infra.monitoring import query
from infra.processes import wait_until
from infra.staging import driver, faults, hosts, patroni
from infra.staging.inventory import REDIS_PORT, STAGING, Host
from infra.staging.paths import Paths
from loadtest.writers import CONNECTION_FAILED, Writers, call_api, lost_writes

FAULTS = (
    "kill primary host",
    "cut primary link",
    "switchover",
    "kill redis master host",
    "kill sync standby host",  # strict mode: commits wait until the other replica takes over
    "kill active load balancer host",  # keepalived moves the floating address to the other
    "kill backup load balancer host",
)
RECOVERY_DEADLINE_SECONDS = 90.0
# The slowest rules wait 15 s (`for:`) after a 2 s scrape: a fault is held this long at most.
ALERT_DEADLINE_SECONDS = 45.0
# Once staging is whole, how long its alerts get to resolve before the next fault (a
# failover's alert, by design, fires on for 10 minutes: it is reported still firing).
RESOLVE_DEADLINE_SECONDS = 20.0


class AlertWatch:
    """Ask Prometheus every second which alerts fire; keep when each one began firing.

    An alert is its name and labels: a second failover fires ``PostgresFailover``
    again for another host while the first one's still fires, and that is a new alert.
    """

    def __init__(self, prometheus: str) -> None:
        self._prometheus = prometheus
        self._began: dict[tuple[tuple[str, str], ...], float] = {}  # firing now: since when
        self._episodes: list[tuple[str, float]] = []  # (name, began) of every alert seen firing
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            found = query.active(self._prometheus)
            if found is None:
                continue  # no answer: keep what was known
            now = time.monotonic()
            firing = {
                tuple(sorted(alert["labels"].items()))
                for alert in found
                if alert["state"] == "firing"
            }
            with self._lock:
                for alert in firing - set(self._began):
                    self._began[alert] = now
                    self._episodes.append((dict(alert)["alertname"], now))
                for alert in set(self._began) - firing:
                    del self._began[alert]

    def fired_since(self, moment: float) -> list[str]:
        """Return the alerts that began firing at or after ``moment``."""
        with self._lock:
            return sorted({name for name, began in self._episodes if began >= moment})

    def still_firing(self, moment: float) -> list[str]:
        """Return the alerts that began firing at or after ``moment`` and fire still."""
        with self._lock:
            return sorted(
                {
                    dict(alert)["alertname"]
                    for alert, began in self._began.items()
                    if began >= moment
                }
            )

    def report(self, moment: float) -> str:
        """Say which alerts began firing since ``moment`` and which of them fire no more."""
        names = self.fired_since(moment)
        if not names:
            return "alerts: none fired (a missing rule)"
        now = set(self.still_firing(moment))
        return "alerts: " + ", ".join(
            f"{name} ({'still firing' if name in now else 'resolved'})" for name in names
        )


@dataclass
class Readers:
    """Threads reading public profiles through the load balancer, counting 5xx answers."""

    address: str
    users: int
    threads: int = 2
    server_errors: int = 0
    reads: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Readers:
        for index in range(self.threads):
            thread = threading.Thread(target=self._read, args=(index,), daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        for thread in self._running:
            thread.join(20)

    def _read(self, index: int) -> None:
        turn = index
        while not self._stopping.is_set():
            try:
                status, _ = call_api(
                    self.address, "GET", f"/api/users/test_user_{turn % self.users}/", None, {}
                )
            except CONNECTION_FAILED:
                status = 0
            self.reads += 1
            if status >= 500:
                self.server_errors += 1
            turn += self.threads
            time.sleep(0.05)


def inject(kind: str, paths: Paths, writers: Writers, alerts: AlertWatch) -> float:
    """Inject one fault, heal it once writes are back; return the seconds without writes.

    A killed host is booted again only once an alert fired too (or after
    ``ALERT_DEADLINE_SECONDS``): healed sooner, a rule with ``for:`` never would.
    """
    started = time.monotonic()
    if kind == "cut primary link":
        host = patroni.leader(STAGING)
        assert host is not None
        faults.cut_link(host)
        writers.wait_for_writes(5, RECOVERY_DEADLINE_SECONDS)
        faults.restore_link(host)
    elif kind == "switchover":
        driver.switchover(paths, progress=lambda _line: None)  # to the synchronous standby
        writers.wait_for_writes(5, RECOVERY_DEADLINE_SECONDS)
    else:  # a host killed, as a power cut would, and booted again once writes are back
        faults.kill_host(_host_to_kill(kind))
        writers.wait_for_writes(5, RECOVERY_DEADLINE_SECONDS)
        wait_until(lambda: bool(alerts.fired_since(started)), ALERT_DEADLINE_SECONDS)
        driver.up(paths, progress=lambda _line: None)
    if not wait_until(lambda: _whole(paths), RECOVERY_DEADLINE_SECONDS):
        print("  staging did not heal in time; going on", flush=True)
    wait_until(lambda: bool(alerts.fired_since(started)), ALERT_DEADLINE_SECONDS)
    wait_until(lambda: not alerts.still_firing(started), RESOLVE_DEADLINE_SECONDS)
    # Every pause from the fault until staging is whole again (the old primary
    # rejoining can pause commits too), and no further: the next fault's are its own.
    return writers.log.gap_around(started, time.monotonic() - started)


def _whole(paths: Paths) -> bool:
    """Tell whether staging is whole: the databases and Redis, and both load balancers."""
    return hosts.failover_ready(STAGING) and driver.lb_ready(STAGING, paths)


def _host_to_kill(kind: str) -> Host:
    if kind == "kill primary host":
        host = patroni.leader(STAGING)
    elif kind == "kill sync standby host":
        host = patroni.sync_standby(STAGING)
    elif kind.endswith("load balancer host"):
        holders = hosts.floating_address_holders(STAGING)
        others = [lb for lb in STAGING.load_balancers if lb not in holders]
        chosen = holders if kind.startswith("kill active") else others
        host = chosen[0] if chosen else None
    else:
        master = hosts.redis_master(STAGING)
        host = next(h for h in STAGING.redis_hosts if master == f"{h.address}:{REDIS_PORT}")
    assert host is not None, f"{kind}: no such host right now"
    return host


def main() -> int:
    seconds = float(os.environ.get("CHAOS_SECONDS", "180"))
    seed_users = int(os.environ.get("CHAOS_SEED_USERS", "200"))
    draw = random.Random(int(os.environ.get("CHAOS_RANDOM_SEED", str(time.time_ns()))))
    # CHAOS_FAULTS: a comma-separated subset of FAULTS to draw from (default: all of them).
    chosen = os.environ.get("CHAOS_FAULTS") or ",".join(FAULTS)
    kinds = [kind.strip() for kind in chosen.split(",")]
    unknown = [kind for kind in kinds if kind not in FAULTS]
    if unknown:
        print(f"chaos: unknown faults {unknown}; choose from {list(FAULTS)}", file=sys.stderr)
        return 2
    paths = driver.default_paths()
    print(f"chaos: staging up, {seed_users} seeded users", flush=True)
    seeded = driver.up(paths, seed_users=seed_users)
    assert seeded is not None
    users = [f"test_user_{number}" for number in range(seeded.users)]
    address = STAGING.load_balancer_address
    counted: Counter[str] = Counter()
    gaps: list[float] = []
    silent = 0  # faults that fired no alert
    with (
        Writers(address, users, seeded.password, threads=4) as writers,
        Readers(address, seeded.users) as readers,
        AlertWatch(STAGING.prometheus_address) as alerts,
    ):
        # Every writer logged in first: a login retried through a fault costs an argon2
        # hash, CPU the failover needs (tests/e2e/test_staging_failover.py waits alike).
        if not (writers.wait_until_logged_in(120) and writers.wait_for_writes(20, 60)):
            print("chaos: writes do not flow before any fault", file=sys.stderr)
            return 1
        began = time.monotonic()
        deadline = began + seconds
        while time.monotonic() < deadline:
            kind = draw.choice(kinds)
            print(f"chaos: {time.monotonic() - began:6.1f} s  {kind}", flush=True)
            started = time.monotonic()
            gap = inject(kind, paths, writers, alerts)
            counted[kind] += 1
            gaps.append(gap)
            fired = alerts.fired_since(started)
            silent += 0 if fired else 1
            print(f"  {gap:.1f} s without writes; {alerts.report(started)}", flush=True)
    lost = lost_writes(STAGING.write_url, writers.log)
    log = writers.log
    if lost:
        _print_when_lost(log.acknowledged, set(lost), began, paths)
    rows = [
        ("faults", ", ".join(f"{kind} x {n}" for kind, n in counted.items()) or "none"),
        ("seconds without writes, p50 / max", _p50_max(gaps)),
        ("acknowledged writes", str(len(log.acknowledged))),
        ("lost writes (must be 0)", str(len(lost))),
        ("503 answers to writes (no primary yet)", str(log.unavailable)),
        ("other 5xx answers to writes (must be 0)", str(log.server_errors)),
        ("profile reads", str(readers.reads)),
        ("5xx answers to reads (must be 0)", str(readers.server_errors)),
        ("faults that fired no alert (must be 0)", str(silent)),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    return 1 if lost or log.server_errors or readers.server_errors or silent else 0


def _print_when_lost(
    acknowledged: list[tuple[float, str]], lost: set[str], began: float, paths: Paths
) -> None:
    """Say when the lost writes were acknowledged, beside the faults' times printed before."""
    moments = sorted(moment - began for moment, slug in acknowledged if slug in lost)
    print(
        f"chaos: {len(moments)} lost writes acknowledged between {moments[0]:.1f} s and "
        f"{moments[-1]:.1f} s; the database hosts' logs: "
        + ", ".join(str(paths.data(host) / "patroni.log") for host in STAGING.databases),
        file=sys.stderr,
    )


def _p50_max(gaps: list[float]) -> str:
    if not gaps:
        return "-"
    return f"{statistics.median(gaps):.1f} / {max(gaps):.1f}"


if __name__ == "__main__":
    sys.exit(main())
