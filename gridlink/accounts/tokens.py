"""Tokens given to clients: how they are made and what is stored of them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits of randomness


def new_token() -> str:
    """Make a token to give the client once; only ``hash_token`` of it is kept."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    # A fast hash is right here: the token is 256 random bits, not a password.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind a valid token."""

    user_id: int
    username: str
    is_admin: bool
    token_hash: bytes
