"""Who may do what on staging's Redis servers and Sentinels: the ACL users, their rules, their keys.

The ``default`` user is off everywhere: a connection that does not say who it
is can do nothing. Every other user has a password of its own (``Secrets``),
stored as its SHA-256 in the rendered files (``#<hash>``), never in clear:

- ``gridlink-api``, the API (every Redis connection of ``gridlink/``): only the
  commands it sends, directly or from its Lua scripts, on its own keys
  (``gl:*``) and the invalidation channel of the near cache. On Sentinel only
  the questions redis-py asks to find the master.
- ``replica``: a replica's link to its master (``masteruser``).
- ``sentinel``: Sentinel's link to each Redis (the set Redis's Sentinel
  documentation gives) and to the other Sentinels.
- ``monitor``: redis_exporter, and ``gridlink staging`` asking who the master is.
- ``operator``: ``gridlink staging rotate-secrets`` changing a user's passwords
  (ACL SETUSER, and saving them: ACL SAVE, SENTINEL FLUSHCONFIG). Whoever may
  change ACLs may give themselves anything: its password is root's alone.

Redis allows a user two passwords at once; ``gridlink staging rotate-secrets``
adds the API's new one, moves the API over, then removes the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.staging.secrets import Secrets

API_USER = "gridlink-api"
REPLICA_USER = "replica"
SENTINEL_USER = "sentinel"
MONITOR_USER = "monitor"
OPERATOR_USER = "operator"

# Each user's secret (Secrets.password names, agreed with the database side).
PASSWORD_OF = {
    API_USER: "redis-api",
    REPLICA_USER: "redis-replication",
    SENTINEL_USER: "redis-sentinel",
    MONITOR_USER: "redis-monitor",
    OPERATOR_USER: "redis-operator",
}


def _plus(commands: str) -> str:
    return " ".join(f"+{command}" for command in commands.split())


# What the API sends: gridlink/cache (GET, SET, DEL, EXISTS, HMGET, pipelines and
# MULTI/EXEC, the Lua scripts and what they call), gridlink/accounts/ratelimit.py
# (its script's sorted sets, ZREM), redis-py's own (PING, HELLO; its CLIENT SETINFO, which
# Redis 7.0 does not know, is refused and ignored),
# the keyspace's run_id (INFO server) and the near cache's tracking connection
# (CLIENT ID, CLIENT TRACKING, SUBSCRIBE __redis__:invalidate).
_API_COMMANDS = (
    "ping hello info client|id client|tracking client|setname subscribe "
    "get set del exists expire hmget hget hset hexists "
    "zadd zcard zrange zrem zremrangebyscore "
    "eval evalsha script|load script|exists multi exec discard"
)
_API_ON_REDIS = f"resetkeys ~gl:* resetchannels &__redis__:invalidate -@all {_plus(_API_COMMANDS)}"

# redis-py's Sentinel client: it asks for the masters and replicas of its service.
_API_ON_SENTINEL = "resetchannels -@all " + _plus(
    "ping hello client|setname sentinel|masters sentinel|master sentinel|slaves "
    "sentinel|replicas sentinel|sentinels sentinel|get-master-addr-by-name"
)

# Redis's Sentinel documentation, "Redis ACL authentication" (REPLICAOF beside SLAVEOF).
_SENTINEL_ON_REDIS = "allchannels -@all " + _plus(
    "multi slaveof replicaof ping exec subscribe config|rewrite role publish info "
    "client|setname client|kill script|kill"
)
# Peers: PING, hello messages (PUBLISH), votes (SENTINEL is-master-down-by-addr), INFO.
_SENTINEL_ON_SENTINEL = "allchannels -@all " + _plus(
    "ping hello publish subscribe info role client|setname client|kill sentinel"
)

_REPLICA_ON_REDIS = "resetchannels -@all " + _plus("psync sync replconf ping")

# redis_exporter: INFO and the read-only introspection it scrapes; no key, no write.
_MONITOR_ON_REDIS = "resetchannels -@all " + _plus(
    "ping hello info client|list client|info client|setname config|get slowlog|get slowlog|len "
    "latency|latest dbsize select memory|stats cluster|info module|list role"
)
_MONITOR_ON_SENTINEL = "resetchannels -@all " + _plus(
    "ping hello info client|setname sentinel|masters sentinel|master sentinel|slaves "
    "sentinel|replicas sentinel|sentinels sentinel|get-master-addr-by-name role"
)

_OPERATOR_ON_REDIS = "resetchannels -@all " + _plus("ping hello acl|setuser acl|save")
_OPERATOR_ON_SENTINEL = "resetchannels -@all " + _plus(
    "ping hello acl|setuser sentinel|flushconfig"
)

ON_REDIS = {
    API_USER: _API_ON_REDIS,
    REPLICA_USER: _REPLICA_ON_REDIS,
    SENTINEL_USER: _SENTINEL_ON_REDIS,
    MONITOR_USER: _MONITOR_ON_REDIS,
    OPERATOR_USER: _OPERATOR_ON_REDIS,
}
ON_SENTINEL = {
    API_USER: _API_ON_SENTINEL,
    SENTINEL_USER: _SENTINEL_ON_SENTINEL,
    MONITOR_USER: _MONITOR_ON_SENTINEL,
    OPERATOR_USER: _OPERATOR_ON_SENTINEL,
}


def password_hash(password: str) -> str:
    """Return the form an ACL file keeps a password in: ``#`` and its SHA-256."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_lines(secrets: Secrets, rules: Mapping[str, str]) -> str:
    """Return the ``user`` lines of an ACL: ``default`` off, then each user with its password."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for user, rule in rules.items():
        lines.append(f"user {user} on {password_hash(secrets.password(PASSWORD_OF[user]))} {rule}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RedisAccess:
    """How a client reaches a Redis or Sentinel of staging: TLS with the CA, as one ACL user."""

    ca_certificate: Path
    username: str
    password: str = field(repr=False)

    @classmethod
    def of(cls, secrets: Secrets, username: str) -> RedisAccess:
        """Return ``username``'s access with ``secrets`` (the CA by its place: not made here)."""
        ca_certificate = secrets.root / "ca.crt"
        return cls(ca_certificate, username, secrets.password(PASSWORD_OF[username]))

    def client_options(self) -> dict[str, Any]:
        """Return redis-py's options: TLS verified against the CA (address too), and the user."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_certificate),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "username": self.username,
            "password": self.password,
        }
