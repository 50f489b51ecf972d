"""Password hashing: argon2id with argon2-cffi's recommended parameters.

A password is only ever kept as its argon2id hash. Checking one takes the same
time whether or not the account exists: an unknown account is checked against
a dummy hash made with the same parameters, so neither the answer nor its
timing tells an attacker which usernames or emails are registered.

Hashing costs about 0.18 s of CPU and 64 MiB, so a process runs only a few
at once (``HashSlots``, about one per core): a request that finds every slot
taken is answered 503 at once instead of queueing CPU work behind a flood.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridlink.errors import Unavailable

# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3,
# m=64 MiB, p=4); the hasher holds no state, so one instance serves all threads.
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """Hash ``password`` for storage."""
    hashed: str = _HASHER.hash(password)
    return hashed


def verify_password(password_hash: str | None, password: str) -> bool:
    """Tell whether ``password`` matches ``password_hash``; ``None`` means no such account.

    With no account the password is checked against a dummy hash anyway, and
    the answer is always no: the work done is the same as for a wrong password.
    """
    try:
        matches: bool = _HASHER.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matches and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """Tell whether a stored hash was made with other parameters than today's."""
    outdated: bool = _HASHER.check_needs_rehash(password_hash)
    return outdated


@functools.cache
def _dummy_hash() -> str:
    # Made on first use, not at import: hashing costs about 0.1 s and 64 MiB.
    return hash_password("not a password: stands in for an account that does not exist")


# Hashing threads run at this niceness: a flood of logins and sign-ups then
# takes the CPU only when nothing else (a cached read, say) wants it.
HASHING_NICENESS = 10


def _lower_priority() -> None:
    # On Linux niceness is per thread: this lowers only the hashing thread.
    # Elsewhere (or if refused) hashing runs at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


class HashSlots:
    """At most ``size`` password hashes or checks at once in this process; never a queue.

    The work runs on ``size`` threads of lower priority (argon2 releases the
    GIL), while the request's thread waits for its answer.
    """

    def __init__(self, size: int) -> None:
        self._free = threading.BoundedSemaphore(size)
        self._threads = ThreadPoolExecutor(
            size, thread_name_prefix="gridlink-hash", initializer=_lower_priority
        )

    @contextmanager
    def taken(self) -> Iterator[None]:
        """Hold a slot for the block, or raise ``Unavailable`` (503) at once if none is free."""
        if not self._free.acquire(blocking=False):
            raise Unavailable(
                "The server is busy checking passwords; try again in a moment.",
                retry_after_seconds=1,
            )
        try:
            yield
        finally:
            self._free.release()

    def hash(self, password: str) -> str:
        """``hash_password`` in a slot."""
        with self.taken():
            return self._threads.submit(lambda: hash_password(password)).result()

    def verify(self, password_hash: str | None, password: str) -> bool:
        """``verify_password`` in a slot."""
        with self.taken():
            return self._threads.submit(lambda: verify_password(password_hash, password)).result()
