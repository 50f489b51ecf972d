"""The operations endpoints' answers (documentation only)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from gridlink.schemas.base import Timestamp


class HealthOut(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadyOut(Schema):
    """Ready (200) when the primary or a replica answers; each dependency says ``ok`` or why not."""

    status = fields.String(
        required=True, validate=validate.OneOf(["ok", "degraded", "unavailable"])
    )
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ReplicaOut(Schema):
    name = fields.String(required=True)
    host = fields.String(required=True)
    reachable = fields.Boolean(required=True)
    in_rotation = fields.Boolean(required=True)
    lag_bytes = fields.Integer(required=True, allow_none=True)
    lag_seconds = fields.Float(required=True, allow_none=True)
    replay_lsn = fields.String(required=True, allow_none=True)


class ServerOut(ReplicaOut):
    """A database host by the role it answers with: primary, replica, unreachable..."""

    role = fields.String(required=True)
    timeline = fields.Integer(required=True, allow_none=True)


class FailoverOut(Schema):
    """The last change of primary the answering process saw."""

    at = fields.String(required=True)
    old = fields.String(required=True)
    new = fields.String(required=True)
    timeline = fields.Integer(required=True, allow_none=True)


class StreamOut(Schema):
    """The change stream: how far Redis is behind the primary's committed profile changes."""

    status = fields.String(required=True)
    applied_lsn = fields.String(required=True, allow_none=True)
    lag_bytes = fields.Integer(required=True, allow_none=True)
    lag_seconds = fields.Float(required=True, allow_none=True)
    pending_changes = fields.Integer(required=True, allow_none=True)


class ReplicasOut(Schema):
    """``GET /api/admin/replicas/``: the replica router's view, as API.md lists it."""

    primary = fields.Dict(required=True)
    replicas = fields.List(fields.Nested(ReplicaOut), required=True)
    max_lag_seconds = fields.Float(required=True)
    stream = fields.Nested(StreamOut, required=True)
    checked_at = Timestamp(required=True, allow_none=True)
    servers = fields.List(fields.Nested(ServerOut), required=True)
    last_failover = fields.Nested(FailoverOut, required=True, allow_none=True)


class OpenApiOut(Schema):
    """``GET /api/openapi.json``: an OpenAPI 3.1 document."""

    class Meta:
        # Only the members every document has are named; the rest are allowed.
        unknown = INCLUDE

    openapi = fields.String(required=True, validate=validate.Regexp(r"^3\.1\."))
    info = fields.Dict(required=True)
    paths = fields.Dict(required=True)
