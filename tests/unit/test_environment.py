"""GRIDLINK_ENV: outside development a server refuses to start without an explicit
mail backend (the default console backend writes reset tokens into the log), or
with a database or Redis on another host reached without TLS and a password."""

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


CA = "sslrootcert=/etc/gridlink/ca.crt"
SAFE_DATABASE = f"postgresql://api:pw@10.77.0.11:5432/gridlink?sslmode=verify-full&{CA}"
SAFE_REDIS = "rediss://gridlink-api:pw@10.77.0.21:6379/0?ssl_ca_certs=/etc/gridlink/ca.crt"
SAFE = {
    "GRIDLINK_MAIL_BACKEND": "console",
    "GRIDLINK_DATABASE_URL": SAFE_DATABASE,
    "GRIDLINK_REPLICA_URLS": SAFE_DATABASE.replace("10.77.0.11", "10.77.0.12"),
    "GRIDLINK_REDIS_URL": SAFE_REDIS,
}


@pytest.mark.parametrize(
    ("variable", "value", "host"),
    [
        ("GRIDLINK_DATABASE_URL", "postgresql://api:pw@10.77.0.11/gridlink", "10.77.0.11"),
        ("GRIDLINK_DATABASE_URL", SAFE_DATABASE.replace("verify-full", "require"), "10.77.0.11"),
        ("GRIDLINK_DATABASE_URL", SAFE_DATABASE.replace("api:pw@", "api@"), "10.77.0.11"),
        # Several hosts (libpq's list): each one counts.
        (
            "GRIDLINK_DATABASE_URL",
            "postgresql://api:pw@127.0.0.1:5432,db2.internal:5432/gridlink?sslmode=disable",
            "db2.internal",
        ),
        ("GRIDLINK_REPLICA_URLS", f"{SAFE_DATABASE},postgresql://api:pw@10.0.0.9/g", "10.0.0.9"),
        ("GRIDLINK_REDIS_URL", SAFE_REDIS.replace("rediss://", "redis://"), "10.77.0.21"),
        ("GRIDLINK_REDIS_URL", SAFE_REDIS.replace("gridlink-api:pw@", ""), "10.77.0.21"),
        ("GRIDLINK_REDIS_URL", SAFE_REDIS + "&ssl_cert_reqs=none", "10.77.0.21"),
    ],
)
def test_production_refuses_a_link_to_another_host_without_tls_and_a_password(
    variable: str, value: str, host: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.for_serving({**SAFE, variable: value})
    assert str(refused.value).startswith(f"{variable}: reaches {host} without TLS and a password")
    assert ":pw@" not in str(refused.value)
    # Development (make run on a laptop) and the safe form are let through.
    Settings.for_serving({**SAFE, variable: value, "GRIDLINK_ENV": "development"})


def test_sentinels_on_other_hosts_need_rediss_and_a_password() -> None:
    sentinels = {"GRIDLINK_REDIS_SENTINELS": "10.77.0.21:26379,10.77.0.22:26379"}
    with pytest.raises(SettingsError, match=r"^GRIDLINK_REDIS_URL: reaches 10\.77\.0\.21 without"):
        Settings.for_serving({**SAFE, **sentinels, "GRIDLINK_REDIS_URL": "redis://127.0.0.1/0"})
    assert Settings.for_serving({**SAFE, **sentinels}).redis_sentinels


def test_production_on_loopback_and_the_safe_form_start() -> None:
    assert Settings.for_serving({"GRIDLINK_MAIL_BACKEND": "console"}).environment == "production"
    assert Settings.for_serving(SAFE).database_url.startswith("postgresql")
    with_a_passfile = SAFE_DATABASE.replace("api:pw@", "api@") + "&passfile=/etc/gridlink/pgpass"
    Settings.for_serving({**SAFE, "GRIDLINK_DATABASE_URL": with_a_passfile})
    on_a_socket = "postgresql://api@/gridlink?host=/var/run/postgresql"
    Settings.for_serving({**SAFE, "GRIDLINK_DATABASE_URL": on_a_socket})


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
