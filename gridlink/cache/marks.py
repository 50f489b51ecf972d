"""Read-your-writes marks: the primary's WAL position after each user's latest write.

**A lost mark is a recent write.** When Redis fails a call, or comes back as
a new lifetime, a missing mark may be one it lost: for as long as a mark
would have lived, this process sends such readers to the primary.
"""

from __future__ import annotations

import redis

from gridlink.cache.lifetime import CacheUnavailable, RedisLifetime, log_redis_unavailable
from gridlink.cache.positions import RAISE_POSITION, decode_position, encode_position
from gridlink.db.lsn import Position


class WriteMarks:
    """Each writer's last commit position, and when a missing one cannot be trusted."""

    def __init__(self, lifetime: RedisLifetime, *, ttl: int) -> None:
        self._lifetime = lifetime
        self._clock = lifetime.clock
        self.ttl = ttl
        # Until then, a missing mark may be one that Redis lost (it was down,
        # or restarted): the reader must assume a recent write.
        self._unsure_until = float("-inf")
        self._raise = lifetime.client.register_script(RAISE_POSITION)
        lifetime.on_new_lifetime(self.doubt)

    def key(self, user_id: int) -> str:
        return self._lifetime.key("written", str(user_id))

    def remember(self, user_id: int, position: Position) -> None:
        """Remember the primary's WAL position (and timeline) after ``user_id``'s latest write."""
        try:
            self._raise(keys=[self.key(user_id)], args=[encode_position(position), self.ttl, 1])
        except redis.RedisError as error:
            log_redis_unavailable("remember write", error)
            self.doubt()

    def last(self, user_id: int) -> Position | None:
        """Return the WAL position of the user's last write, or None if none is remembered.

        Raises ``CacheUnavailable`` when Redis cannot say: the caller must then
        assume a recent write and read from the primary.
        """
        try:
            key = self.key(user_id)
            raw = self._lifetime.client.get(key)
        except redis.RedisError as error:
            log_redis_unavailable("read write mark", error)
            self.doubt()
            raise CacheUnavailable() from error
        if key != self.key(user_id):
            raise CacheUnavailable()  # Redis restarted during the call
        if raw is None:
            if self._clock() < self._unsure_until:
                raise CacheUnavailable()
            return None
        return decode_position(raw)  # type: ignore[arg-type]

    def doubt(self) -> None:
        """Distrust missing marks for as long as a mark would have lived."""
        self._unsure_until = self._clock() + self.ttl
