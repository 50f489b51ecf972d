"""Keep one ``gridlink relay`` process running beside a gunicorn master.

The gunicorn master starts a ``RelaySupervisor`` when it is ready
(``infra/gunicorn.conf.py``: ``when_ready``) and stops it on exit
(``on_exit``). A thread runs the relay as a child process and starts it again
whenever it exits, after a pause that doubles up to 10 s while it keeps
failing at once. The child dies with its supervisor (Linux's parent-death
signal), so a master killed with SIGKILL leaves no relay behind.

Every ``gridlink serve`` host runs one; the relays' advisory lock on the
primary lets one relay work at a time while the others wait to take over.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("gridlink.relay")

RELAY_COMMAND = (sys.executable, "-m", "gridlink.cli", "relay")
_PR_SET_PDEATHSIG = 1
_QUICK_EXIT_SECONDS = 10.0
_MAX_PAUSE_SECONDS = 10.0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the thread that started it ends."""
    # Not Linux (no prctl): the relay then outlives a master killed with SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RelaySupervisor:
    """Run the relay command as a child process and restart it whenever it exits."""

    def __init__(self, command: tuple[str, ...] = RELAY_COMMAND) -> None:
        self._command = command
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="gridlink-relay-supervisor")
        self._thread.daemon = True

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop restarting, SIGTERM the relay and wait for it (SIGKILL past ``timeout``)."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout)

    def _run(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = subprocess.Popen(self._command, preexec_fn=_die_with_parent)
            log.info("relay started (pid %d)", self._process.pid)
            # gunicorn's master reaps every child it gets SIGCHLD for; wait()
            # then finds none and reports 0, which is all this loop needs.
            code = self._process.wait()
            if self._stopping.is_set():
                return
            log.warning("relay exited (status %s); starting it again in %.0f s", code, pause)
            self._stopping.wait(pause)
            quick = time.monotonic() - started < _QUICK_EXIT_SECONDS
            pause = min(pause * 2, _MAX_PAUSE_SECONDS) if quick else 1.0
