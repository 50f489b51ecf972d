"""GRIDLINK_ENV: outside development a server refuses to start without an explicit
mail backend (the default console backend writes reset tokens into the log)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gridlink.project import PROJECT_ROOT
from gridlink.settings import Settings, SettingsError
from infra.serving import GUNICORN_CONF

# A port of this run's own (GRIDLINK_TEST_PORT_BASE), never bound when the refusal works.
PORT = int(os.environ.get("GRIDLINK_TEST_PORT_BASE", "15442")) + 95
REFUSAL = "gridlink: GRIDLINK_MAIL_BACKEND: must be set outside development"


def test_production_is_the_default_and_development_is_read() -> None:
    assert Settings.from_env({}).environment == "production"
    assert Settings.from_env({"GRIDLINK_ENV": "development"}).environment == "development"


def test_an_unknown_environment_is_named() -> None:
    with pytest.raises(SettingsError, match=r"^GRIDLINK_ENV: must be development or production"):
        Settings.from_env({"GRIDLINK_ENV": "staging"})


def test_a_production_server_needs_an_explicit_mail_backend() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.for_serving({})
    assert str(refused.value).startswith("GRIDLINK_MAIL_BACKEND: must be set outside development")
    assert Settings.for_serving({"GRIDLINK_MAIL_BACKEND": "console"}).mail_backend.kind == "console"
    assert Settings.for_serving({"GRIDLINK_ENV": "development"}).mail_backend.kind == "console"


def without_gridlink_variables(**extra: str) -> dict[str, str]:
    kept = {name: value for name, value in os.environ.items() if not name.startswith("GRIDLINK_")}
    return {**kept, **extra}


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gridlink.cli", "serve", "--bind", f"127.0.0.1:{PORT}"],
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{PORT}"],
    ],
    ids=["gridlink serve", "gunicorn"],
)
def test_serving_without_a_mail_backend_stops_with_one_line(command: list[str]) -> None:
    result = subprocess.run(
        command,
        env=without_gridlink_variables(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    # gunicorn logs its own start (a JSON line) before it asks the settings.
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(said) == 1, result.stderr
    assert said[0].startswith(REFUSAL), result.stderr
