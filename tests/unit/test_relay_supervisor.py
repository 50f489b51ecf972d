"""The relay supervisor restarts its child whenever it exits, and stops it when asked."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from infra.relay_supervisor import RelaySupervisor


def starts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_relay_that_exits_is_started_again_and_stop_ends_it(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    # Each start appends a line, then the first two exit at once and the third stays.
    script = (
        "import pathlib, sys, time\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "with log.open('a') as f: f.write('started\\n')\n"
        "if len(log.read_text().splitlines()) < 3: sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    supervisor = RelaySupervisor((sys.executable, "-c", script))
    supervisor.start()
    try:
        deadline = time.monotonic() + 20
        while starts(log) < 3:
            assert time.monotonic() < deadline, f"started {starts(log)} times"
            time.sleep(0.05)
        pid = supervisor.pid
        assert pid is not None
    finally:
        supervisor.stop(timeout=5)
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
    assert starts(log) == 3
