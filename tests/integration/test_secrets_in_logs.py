"""Secrets never reach the log: a failing statement is logged without its parameters."""

from __future__ import annotations

import logging
import secrets

import falcon
import falcon.testing
from sqlalchemy import Engine, text

from gridlink.app import create_app
from gridlink.web.logs import JsonFormatter

FAILING = text("SELECT CAST(:password_hash AS integer)")


class FailingStatement:
    """A responder whose statement fails in the database, as a bug would."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.secret = f"$argon2id$v=19${secrets.token_hex(16)}"

    def on_get(self, req, resp):
        with self._engine.connect() as connection:
            connection.execute(FAILING, {"password_hash": self.secret})


def test_a_failing_statements_log_line_shows_no_parameter_value(settings, services, caplog):
    app = create_app(settings, services)
    failing = FailingStatement(services.primary)
    app.add_route("/failing", failing)
    with caplog.at_level(logging.ERROR, logger="gridlink"):
        result = falcon.testing.TestClient(app).simulate_get("/failing")
    assert result.status_code == 500
    assert failing.secret not in result.text
    logged = [JsonFormatter().format(record) for record in caplog.records]
    # The 500 was logged with the failing statement's traceback...
    assert any("CAST" in line and "InvalidTextRepresentation" in line for line in logged), logged
    # ...and without the value it was given.
    assert not any(failing.secret in line for line in logged)
    assert all("[parameters:" not in line or "hidden" in line for line in logged)
