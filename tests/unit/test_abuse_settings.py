"""The abuse settings: CORS origins and password-reset limits, from the environment."""

from __future__ import annotations

import pytest

from gridlink.settings import Settings, SettingsError


def test_no_origin_is_allowed_by_default() -> None:
    assert Settings.from_env({}).cors_origins == ()


def test_origins_are_read_comma_separated_and_lowercased() -> None:
    settings = Settings.from_env(
        {"GRIDLINK_CORS_ORIGINS": "https://App.example, http://localhost:3000,"}
    )
    assert settings.cors_origins == ("https://app.example", "http://localhost:3000")


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "app.example",
        "https://app.example/",
        "https://app.example/path",
        "ftp://x.example",
        "https://user@app.example",
        "https://app.example:port",
    ],
)
def test_anything_but_an_exact_origin_stops_start_up_naming_the_variable(origin: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"GRIDLINK_CORS_ORIGINS": origin})
    assert refused.value.variable == "GRIDLINK_CORS_ORIGINS"


def reset_limits(settings: Settings) -> tuple[int, int, int]:
    return (
        settings.password_resets_per_email,
        settings.password_resets_per_address,
        settings.password_reset_window_seconds,
    )


def test_reset_limits_default_to_3_per_email_and_20_per_address_an_hour() -> None:
    assert reset_limits(Settings.from_env({})) == (3, 20, 3600)


def test_reset_limits_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "GRIDLINK_PASSWORD_RESETS_PER_EMAIL": "5",
            "GRIDLINK_PASSWORD_RESETS_PER_ADDRESS": "50",
            "GRIDLINK_PASSWORD_RESET_WINDOW_SECONDS": "600",
        }
    )
    assert reset_limits(settings) == (5, 50, 600)


def test_a_reset_limit_must_be_a_positive_whole_number() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"GRIDLINK_PASSWORD_RESETS_PER_EMAIL": "0"})
    assert refused.value.variable == "GRIDLINK_PASSWORD_RESETS_PER_EMAIL"
