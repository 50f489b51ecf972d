"""Work a request leaves behind, done a batch at a time by a thread of the process.

A worker's threads each answer a request, then count it and log it. Done on
the request's thread, that bookkeeping takes locks and makes system calls
that every other thread of the worker waits behind (bench/results.md). So the
request only appends to a ``Batches`` queue (a ``deque``: no lock of ours, no
system call), and a thread of this process takes everything queued every
``interval`` seconds. Whoever needs it all done now (a scrape, an exit) calls
``drain``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Batches(Generic[T]):
    """Queue items; ``apply`` gets them, in order and a list at a time, from a thread of its own.

    The thread starts with the first item (so a process that forks after
    making this, as gunicorn's master does, starts one in each worker) and
    stops at ``close``. A forked child starts with an empty queue: the parent
    applies what it queued.
    """

    def __init__(
        self,
        apply: Callable[[list[T]], None],
        *,
        interval: float,
        name: str,
        lock: threading.RLock | None = None,
    ) -> None:
        """``lock``: the one ``apply`` takes, if it takes one (see ``_reset``)."""
        self._apply = apply
        self._interval = interval
        self._name = name
        self._given_lock = lock
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._queued: deque[T] = deque()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Held while applying: a drain returns only once what it took is applied. When
        # ``apply`` takes a lock of its own, that same (reentrant) lock: with two, a drain
        # from a caller already holding it would wait on the thread, waiting on it.
        self._apply_lock = self._given_lock or threading.RLock()
        self._closing = threading.Event()

    def put(self, item: T) -> None:
        self._queued.append(item)
        if self._thread is None:
            self._start()

    def drain(self) -> None:
        """Apply everything queued so far, on this thread."""
        with self._apply_lock:
            taken = []
            while self._queued:
                taken.append(self._queued.popleft())
            if taken:
                self._apply(taken)

    def close(self) -> None:
        """Apply what is left on this thread; the batch thread stops at its next wake-up."""
        self._closing.set()
        self.drain()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closing.is_set():
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while not self._closing.wait(self._interval):
            try:
                self.drain()
            except Exception:
                # That batch is lost; the thread goes on with the next.
                log.exception("%s: a batch failed", self._name)


# Every Batches not yet garbage, for the one at-fork handler below: registering one
# per instance would keep each instance (and what its ``apply`` holds) for good.
_LIVE: weakref.WeakSet[Batches[Any]] = weakref.WeakSet()


def drain_all() -> None:
    """Apply what every live ``Batches`` of this process has queued, on this thread."""
    for batches in list(_LIVE):
        batches.drain()


def _reset_after_fork() -> None:
    for batches in list(_LIVE):
        batches._reset()


os.register_at_fork(after_in_child=_reset_after_fork)
