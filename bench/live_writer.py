"""Another user writing at a steady rate while the bench reads: the live-writer runs.

Real deployments are never idle: someone is always editing a grid. The writer
is a user of its own (not one of the profiles ``wrk`` reads), renaming a grid
through the API of the server under measurement at a fixed rate, so every
write goes the whole way: a transaction on the primary, the write-through,
the change stream, and the stream's applied position moving on.
"""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType

from infra.http_client import api_request

# One thread keeps at most this many writes a second: a write on a busy machine
# takes tens of milliseconds, and a thread sends the next only after an answer.
WRITES_PER_THREAD = 5


class LiveWriter:
    """Rename a grid of ``token``'s user ``per_second`` times a second until the block ends."""

    def __init__(self, address: str, token: str, grid: str, per_second: float) -> None:
        self._address = address
        self._token = token
        self._grid = grid
        count = max(1, math.ceil(per_second / WRITES_PER_THREAD))
        self._interval = count / per_second  # each thread's; the threads start staggered
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(number / per_second,), daemon=True)
            for number in range(count)
        ]
        self._lock = threading.Lock()
        self._failure: str | None = None
        self.written = 0
        self._started = 0.0
        self._stopped = 0.0

    @property
    def writes_per_second(self) -> float:
        """The rate the writer kept (writes answered, per second of running so far)."""
        stopped = self._stopped or time.monotonic()
        return self.written / max(1e-9, stopped - self._started)

    def __enter__(self) -> LiveWriter:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._stopped = time.monotonic()
        if self._failure is not None and kind is None:
            raise RuntimeError(f"live writer: {self._failure}")

    def _run(self, offset: float) -> None:
        due = self._started + offset
        while not self._stopping.wait(max(0.0, due - time.monotonic())):
            reply = api_request(
                self._address,
                "PATCH",
                f"/api/grids/{self._grid}/",
                {"title": f"Live {self.written}"},
                self._token,
            )
            with self._lock:
                if reply.status != 200:
                    self._failure = f"a write answered {reply.status}: {reply.body[:200]!r}"
                    self._stopping.set()
                    return
                self.written += 1
            # A fixed schedule, not a fixed pause: a slow write does not lower the rate.
            due += self._interval
