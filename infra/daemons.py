"""One way to run a long-lived program: started in the foreground, found again by pid file.

Patroni's own test harness has one controller base class and a subclass per
process kind; this is that shape. A ``Daemon`` runs its command in a session
of its own (inside a network namespace when it has one), writes the pid to
its pid file, sends its output to its log, and is stopped by pid, so a later
``gridlink`` invocation stops exactly what an earlier one started. Programs
that daemonise themselves (``pg_ctl``, ``redis-server --daemonize``) keep
their own drivers in ``infra.postgres`` and ``infra.redis_server``.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.errors import ClusterError, Progress
from infra.processes import in_namespace, live_pid, log_tail, stop_process, wait_until

START_TIMEOUT = 60.0


class Daemon:
    """A long-running program: its command, pid file, log, and how to tell it answers.

    Subclasses name the ``program`` (what its command line contains, so a
    recycled pid is never mistaken for it) and may override ``answers``.
    """

    program = ""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        pid_file: Path,
        log: Path,
        cwd: Path,
        netns: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.pid_file = pid_file
        self.log = log
        self.cwd = cwd
        self.netns = netns
        self.environment = dict(environment) if environment is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        """Tell whether the program serves yet (by default: as soon as it runs)."""
        return True

    def pid(self) -> int | None:
        """Return the program's pid if it runs."""
        return live_pid(self.pid_file, self.program)

    def start(
        self, progress: Progress, timeout: float = START_TIMEOUT, *, wait: bool = True
    ) -> None:
        """Start the program unless it runs; wait until it answers, else say why with its log.

        ``wait=False`` returns once it runs: members of a cluster that answer
        only once enough of them run are started together, then waited for.
        """
        running = self.pid()
        if running is not None:
            progress(f"{self.name}: already running (pid {running})")
            return
        pid = self.launch()
        if wait:
            self.wait_until_answering(timeout)
        progress(f"{self.name}: started (pid {pid}, log {self.log})")

    def launch(self) -> int:
        """Start the program and return its pid, without waiting for it to answer."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as output:
            # `ip netns exec` and setpriv exec: this pid is the program's own.
            self.process = subprocess.Popen(
                in_namespace(self.netns, self.command),
                cwd=self.cwd,
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        return self.process.pid

    def wait_until_answering(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the program answers; raise ``ClusterError`` if it exits or stays silent."""
        process = self.process
        if not wait_until(lambda: self.exited() or self.answers(), timeout):
            raise ClusterError(
                f"{self.name} did not answer within {timeout:.0f} s; "
                f"{self.log} ends with:\n{log_tail(self.log)}"
            )
        if self.exited():
            code = "" if process is None else f" with status {process.returncode}"
            raise ClusterError(
                f"{self.name} exited{code}; {self.log} ends with:\n{log_tail(self.log)}"
            )

    def exited(self) -> bool:
        """Tell whether the program started by this object has exited (reaping it)."""
        return self.process is not None and self.process.poll() is not None

    def stop(self, progress: Progress, signum: signal.Signals = signal.SIGTERM) -> None:
        """Ask the program to stop and wait until it is gone."""
        stop_process(self.name, self.pid(), signum, self.program, self.log, progress)
        if self.process is not None:
            self.process.wait()  # started here: reap it, so no zombie is left
