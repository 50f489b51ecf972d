"""Settings: defaults, parsing, and one clear line for a bad value."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gridlink.db.urls import sqlalchemy_url
from gridlink.oidc.config import OidcProvider
from gridlink.project import PROJECT_ROOT
from gridlink.settings import MailBackend, Settings, SettingsError, TrustedProxies
from infra.cluster import ClusterLayout


def test_defaults_are_the_local_cluster_addresses() -> None:
    local = ClusterLayout(root=Path("var/cluster"))
    settings = Settings.from_env({})
    assert settings.database_url == local.database_url
    assert settings.replica_urls == local.replica_urls
    assert settings.redis_url == local.redis_url
    assert settings.max_replica_lag_seconds == 5.0
    assert settings.mail_backend.kind == "console"


def test_values_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "GRIDLINK_DATABASE_URL": "postgresql://app@db.example:5433/grid",
            "GRIDLINK_REPLICA_URLS": "postgresql://app@r1:5432/grid, postgresql://app@r2:5432/grid",
            "GRIDLINK_REDIS_URL": "redis://cache:6380/2",
            "GRIDLINK_MAX_REPLICA_LAG_SECONDS": "2.5",
            "GRIDLINK_MAIL_BACKEND": "smtp://mail.example:2525",
        }
    )
    assert settings.database_url == "postgresql+psycopg2://app@db.example:5433/grid"
    assert settings.replica_urls == (
        "postgresql+psycopg2://app@r1:5432/grid",
        "postgresql+psycopg2://app@r2:5432/grid",
    )
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.max_replica_lag_seconds == 2.5
    assert (settings.mail_backend.host, settings.mail_backend.port) == ("mail.example", 2525)


def test_empty_replica_list_means_reads_go_to_the_primary() -> None:
    assert Settings.from_env({"GRIDLINK_REPLICA_URLS": ""}).replica_urls == ()


def test_file_mail_backend_names_a_directory() -> None:
    backend = Settings.from_env({"GRIDLINK_MAIL_BACKEND": "file:/tmp/mails"}).mail_backend
    assert (backend.kind, backend.directory) == ("file", Path("/tmp/mails"))


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("GRIDLINK_DATABASE_URL", "mysql://x@y/z", "postgresql://"),
        ("GRIDLINK_DATABASE_URL", "postgresql://x@y:port/z", "port"),
        ("GRIDLINK_REPLICA_URLS", "postgresql://a@b/c,nonsense", "postgresql://"),
        ("GRIDLINK_REDIS_URL", "http://cache", "redis://"),
        ("GRIDLINK_REDIS_SENTINELS", "10.77.0.21", "host:port"),
        ("GRIDLINK_REDIS_SENTINELS", "10.77.0.21:sentinel", "host:port"),
        ("GRIDLINK_REDIS_SERVICE", "grid link", "Sentinel master name"),
        ("GRIDLINK_MAX_REPLICA_LAG_SECONDS", "soon", "number"),
        ("GRIDLINK_MAX_REPLICA_LAG_SECONDS", "-1", "positive"),
        ("GRIDLINK_MAIL_BACKEND", "pigeon", "console, file:<directory> or smtp://"),
        ("GRIDLINK_MAIL_BACKEND", "file:", "directory"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_problem(
    variable: str, value: str, complaint: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert complaint in message
    assert "\n" not in message


def test_a_bad_value_stops_the_command_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gridlink.cli", "migrate"],
        env={"GRIDLINK_MAX_REPLICA_LAG_SECONDS": "often", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gridlink: GRIDLINK_MAX_REPLICA_LAG_SECONDS: must be a number (got 'often')"
    ]


def test_the_profile_size_bound_is_read_and_checked() -> None:
    assert Settings.from_env({}).max_profile_bytes == 512 * 1024
    assert Settings.from_env({"GRIDLINK_MAX_PROFILE_BYTES": "65536"}).max_profile_bytes == 65536
    with pytest.raises(SettingsError, match=r"^GRIDLINK_MAX_PROFILE_BYTES: must be a positive"):
        Settings.from_env({"GRIDLINK_MAX_PROFILE_BYTES": "0"})


def test_sentinels_and_their_service_are_read_as_addresses_and_a_name() -> None:
    settings = Settings.from_env(
        {
            "GRIDLINK_REDIS_SENTINELS": "10.77.0.21:26379, 10.77.0.22:26379,[::1]:26380",
            "GRIDLINK_REDIS_SERVICE": "gridlink",
        }
    )
    assert settings.redis_sentinels == (
        ("10.77.0.21", 26379),
        ("10.77.0.22", 26379),
        ("::1", 26380),
    )
    assert settings.redis_service == "gridlink"
    assert Settings.from_env({}).redis_sentinels == ()  # no sentinels: GRIDLINK_REDIS_URL


def _every_field_changed() -> Settings:
    return Settings(
        # As from_env stores a multi-host URL (SQLAlchemy's form).
        database_url=sqlalchemy_url(
            "postgresql://app:secret@10.0.0.1:5432,10.0.0.2:5433/grid"
            "?target_session_attrs=read-write"
        ),
        replica_urls=(
            "postgresql+psycopg2://app@r1:5432/grid",
            "postgresql+psycopg2://app@r2:5432/grid",
        ),
        redis_url="redis://cache:6380/2",
        redis_sentinels=(("10.77.0.21", 26379), ("::1", 26380)),
        redis_service="other",
        max_replica_lag_seconds=2.5,
        cache_fill_ttl_seconds=60,
        near_cache_bytes=0,
        mail_backend=MailBackend("smtp", host="mail.example", port=2525),
        token_ttl_days=7,
        token_idle_days=3,
        admin_token_ttl_hours=2,
        login_failures_per_client=3,
        login_failures_per_account=40,
        login_failures_per_address=30,
        password_checks_per_session=2,
        login_window_seconds=60,
        max_devices_per_user=7,
        max_grids_per_user=10,
        max_links_per_grid=20,
        max_profile_bytes=65536,
        password_resets_per_email=2,
        password_resets_per_address=10,
        password_reset_window_seconds=600,
        email_changes_per_account=4,
        signups_per_address=5,
        signups_per_minute=30,
        concurrent_hashes=3,
        server_processes=4,
        max_tokens_per_user=5,
        deleted_retention_days=7,
        cors_origins=("https://app.example", "http://localhost:3000"),
        environment="development",
        trusted_proxies=TrustedProxies.parse("10.0.0.5, 10.1.0.0/16, fd00::/8, unix"),
        bind="0.0.0.0:9000",
        workers=3,
        metrics_bind="10.0.0.5:9101",
        tls_certificate="/etc/gridlink/api.crt",
        tls_key="/etc/gridlink/api.key",
        token_cache_keys=("k" * 43, "o" * 43),
        oidc_providers=(
            OidcProvider("gitlab", "https://gitlab.example", "gridlink", "a provider secret"),
            OidcProvider("local", "http://127.0.0.1:9400/", "app", "another client secret"),
        ),
    )


def test_every_setting_is_written_back_to_its_variable_and_read_again() -> None:
    changed = _every_field_changed()
    defaults = Settings()
    unchanged = [
        f.name for f in fields(Settings) if getattr(changed, f.name) == getattr(defaults, f.name)
    ]
    assert unchanged == [], "give these fields a value of their own above"
    assert Settings.from_env(changed.to_environ()) == changed
    assert Settings.from_env(defaults.to_environ()) == defaults


def test_each_variable_is_named_once_and_for_one_field() -> None:
    names = [variable.name for variable in Settings.variables().values()]
    assert len(names) == len(set(names)) == len(fields(Settings))
    assert all(name.startswith("GRIDLINK_") for name in names)


def _readme_configuration_rows() -> dict[str, str]:
    """Return the README's configuration table: each variable's default column."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`GRIDLINK_[A-Z_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_readme_table_lists_every_variable_with_its_default() -> None:
    rows = _readme_configuration_rows()
    declared = Settings().to_environ()
    assert sorted(rows) == sorted(declared)
    for name, default in rows.items():
        literal = re.fullmatch(r"`([^`]*)`", default)
        if literal is not None:
            assert literal.group(1) == declared[name], name
