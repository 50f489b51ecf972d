"""Run commands, find servers again by pid file, wait for conditions, stop processes."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.errors import ClusterError, Progress

STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 20
LOOPBACK = "127.0.0.1"


def run(command: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; turn a hang or a missing binary into ClusterError."""
    # libpq reads PG* variables; a developer's PGHOST or PGPORT must not redirect the tools.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    try:
        return subprocess.run(
            list(command),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"`{shlex.join(command)}` did not finish within {timeout:.0f} s."
        ) from None
    except OSError as exc:
        raise ClusterError(f"Could not run `{shlex.join(command)}`: {exc}.") from exc


def process_alive(pid: int, program: str) -> bool:
    """Tell whether pid is a live process of `program` (not a zombie, not a recycled pid)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    # Daemonised servers are re-parented to pid 1, which may never reap them: a zombie is dead.
    return state not in ("Z", "X") and program.encode() in cmdline


def read_pid(pid_file: Path) -> int | None:
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first_line) if first_line.isdigit() else None


def live_pid(pid_file: Path, program: str) -> int | None:
    """Return the pid in ``pid_file`` if it is a live process of ``program``."""
    pid = read_pid(pid_file)
    return pid if pid is not None and process_alive(pid, program) else None


def remove_if_stale(pid_file: Path, program: str) -> None:
    """Delete a lock file left by a crash, whose pid may since belong to an unrelated process."""
    if pid_file.exists() and live_pid(pid_file, program) is None:
        pid_file.unlink(missing_ok=True)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` every 0.1 s; tell whether it held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_answers(port: int, host: str = LOOPBACK) -> bool:
    """Tell whether something accepts connections on ``host``:``port`` (loopback by default)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    """Return a port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_port_free(port: int, name: str, host: str = LOOPBACK) -> None:
    if port_answers(port, host):
        raise ClusterError(
            f"Port {port} on {host} is already taken by a process this cluster did not "
            f"start, so {name} cannot use it; stop that process or choose other ports."
        )


def launch(
    name: str,
    address: str,
    command: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    answers: Callable[[], bool],
    log: Path,
) -> None:
    """Run a server's start command and wait until it answers; else say why, with its log."""
    result = run(command, cwd=cwd, timeout=timeout + 10)
    if result.returncode != 0 or not wait_until(answers, timeout):
        raise ClusterError(
            f"{name} did not come up on {address} "
            f"({result.stderr.strip() or 'no answer'}); {log} ends with:\n{log_tail(log)}"
        )


def log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def stop_process(
    name: str, pid: int | None, sig: signal.Signals, program: str, log: Path, progress: Progress
) -> None:
    """Signal a server to shut down and wait until its process is gone."""
    if pid is None:
        progress(f"{name}: not running")
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not process_alive(pid, program), STOP_TIMEOUT):
        raise ClusterError(
            f"{name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s; "
            f"its log ends with:\n{log_tail(log)}"
        )
    progress(f"{name}: stopped (pid {pid})")


def as_account(account: str | None) -> list[str]:
    """Return the prefix that runs a command as ``account`` (its groups too); [] for None."""
    if account is None:
        return []
    return ["setpriv", f"--reuid={account}", f"--regid={account}", "--init-groups", "--"]


def in_namespace(netns: str | None, command: Sequence[str]) -> list[str]:
    """Run ``command`` inside network namespace ``netns`` (as `ip netns exec` does), if any."""
    return list(command) if netns is None else ["ip", "netns", "exec", netns, *command]
