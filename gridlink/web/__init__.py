"""The HTTP edge: the app class, request ids and limits, auth, security headers, metrics, logs,
the OpenAPI document and idempotent replays."""
