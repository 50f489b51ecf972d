"""Tokens given to clients: how they are made, what is stored of them, and of their sessions."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits of randomness
# What new_token() makes: TOKEN_BYTES in URL-safe base64, without padding.
_TOKEN_FORM = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")
# What a session keeps of the client that logged in; longer is cut.
CLIENT_ADDRESS_MAX_LENGTH = 64
USER_AGENT_MAX_LENGTH = 256


def new_token() -> str:
    """Make a token to give the client once; only ``hash_token`` of it is kept."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_token_form(token: str) -> bool:
    """Tell whether ``token`` has the form ``new_token`` gives (else no token is that)."""
    return _TOKEN_FORM.match(token) is not None


def hash_token(token: str) -> bytes:
    # A fast hash is right here: the token is 256 random bits, not a password.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def bounded_text(value: str | None, max_length: int) -> str | None:
    """Keep what a session records of a header: printable characters, at most ``max_length``."""
    if value is None:
        return None
    return "".join(character for character in value if character.isprintable())[:max_length]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind a valid token."""

    user_id: int
    username: str
    is_admin: bool
    token_hash: bytes
