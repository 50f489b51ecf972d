"""Seal what the cache holds that grants an identity, so write access to Redis alone grants none.

A token's cache entry says who the caller is and whether they are an admin.
Redis is a shared service: anyone who can write to it could otherwise make any
token anyone's. Each such entry is sealed with HMAC-SHA256 under a server-side
key (``GRIDLINK_TOKEN_CACHE_KEYS``) and bound to its context (the token's
hash), so an entry written by hand, or copied from another token's key, fails
to open and is treated as a miss: the database decides.

Keys rotate without a failed request: the first key seals, every key listed
opens. Deploy ``new,old``; once every entry sealed with ``old`` has lived its
minute, deploy ``new``.

A server launched without keys gets one per launch (``infra/gunicorn.conf.py``
sets it in the master, so its workers and relay share it); an app built in a
process of its own (tests, the benchmark's in-process runs) gets one per
process. Several hosts sharing one Redis must share the keys: set them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

MIN_KEY_CHARACTERS = 32  # base64url of 24 random bytes; new_key makes 43
_DOMAIN = b"gridlink cache seal v1\0"
_SEPARATOR = b"."
_TAG_CHARACTERS = 43  # base64url of a SHA-256 MAC, unpadded


def new_key() -> str:
    """Return a fresh random key (256 bits, base64url)."""
    return secrets.token_urlsafe(32)


class Seal:
    """Seal and open cache entries with HMAC-SHA256 under the server's keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a seal needs at least one key")
        self._keys = [key.encode() for key in keys]

    @classmethod
    def for_keys(cls, keys: Sequence[str]) -> Seal:
        """Return the seal of ``keys``, or of a key of this process's own when none is set."""
        return cls(keys or (new_key(),))

    def seal(self, context: bytes, payload: bytes) -> bytes:
        """Return ``payload`` with the tag that binds it to ``context`` under the first key."""
        return self._tag(self._keys[0], context, payload) + _SEPARATOR + payload

    def open(self, context: bytes, sealed: bytes) -> bytes | None:
        """Return the payload if some key's tag for ``context`` matches, else None."""
        tag, separator, payload = sealed.partition(_SEPARATOR)
        if not separator or len(tag) != _TAG_CHARACTERS:
            return None
        for key in self._keys:
            if hmac.compare_digest(tag, self._tag(key, context, payload)):
                return payload
        return None

    @staticmethod
    def _tag(key: bytes, context: bytes, payload: bytes) -> bytes:
        message = _DOMAIN + len(context).to_bytes(4, "big") + context + payload
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")
