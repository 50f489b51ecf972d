"""OpenID provider settings: read from one variable per provider field, checked at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gridlink.oidc.config import OidcProvider, is_allowed_url
from gridlink.settings import Settings, SettingsError

SECRET = "a provider client secret"


def _provider_environ(name: str = "gitlab", **overrides: str) -> dict[str, str]:
    prefix = f"GRIDLINK_OIDC_{name.upper()}_"
    environ = {
        "GRIDLINK_OIDC_PROVIDERS": name,
        prefix + "ISSUER": "https://gitlab.example",
        prefix + "CLIENT_ID": "gridlink",
        prefix + "CLIENT_SECRET": SECRET,
    }
    environ.update({prefix + key: value for key, value in overrides.items()})
    return environ


def test_no_provider_is_configured_by_default() -> None:
    assert Settings.from_env({}).oidc_providers == ()
    assert Settings().to_environ()["GRIDLINK_OIDC_PROVIDERS"] == ""


def test_each_named_provider_is_read_from_its_own_variables() -> None:
    environ = {
        **_provider_environ("gitlab"),
        **_provider_environ("local", ISSUER="http://127.0.0.1:9400/"),
        "GRIDLINK_OIDC_PROVIDERS": "gitlab, local",
    }
    providers = Settings.from_env(environ).oidc_providers
    assert providers == (
        OidcProvider("gitlab", "https://gitlab.example", "gridlink", SECRET),
        OidcProvider("local", "http://127.0.0.1:9400/", "gridlink", SECRET),
    )


def test_providers_are_written_back_for_a_child_process() -> None:
    settings = Settings.from_env(_provider_environ())
    environ = settings.to_environ()
    assert environ["GRIDLINK_OIDC_GITLAB_CLIENT_SECRET"] == SECRET
    assert Settings.from_env(environ) == settings


@pytest.mark.parametrize(
    ("overrides", "variable", "complaint"),
    [
        ({"ISSUER": "http://gitlab.example"}, "GRIDLINK_OIDC_GITLAB_ISSUER", "https"),
        ({"ISSUER": "gitlab.example"}, "GRIDLINK_OIDC_GITLAB_ISSUER", "https"),
        ({"ISSUER": "https://gitlab.example/?tenant=1"}, "GRIDLINK_OIDC_GITLAB_ISSUER", "query"),
        ({"ISSUER": "https://user@gitlab.example"}, "GRIDLINK_OIDC_GITLAB_ISSUER", "https"),
        ({"ISSUER": ""}, "GRIDLINK_OIDC_GITLAB_ISSUER", "must be set"),
        ({"CLIENT_ID": " "}, "GRIDLINK_OIDC_GITLAB_CLIENT_ID", "must be set"),
        ({"CLIENT_SECRET": ""}, "GRIDLINK_OIDC_GITLAB_CLIENT_SECRET", "must be set"),
    ],
)
def test_a_bad_provider_variable_is_named_with_its_problem(
    overrides: dict[str, str], variable: str, complaint: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(_provider_environ(**overrides))
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert complaint in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("names", "complaint"),
    [
        ("Google", "lowercase"),
        ("my-idp", "lowercase"),
        ("gitlab,gitlab", "twice"),
        ("signup", "reserved"),
    ],
)
def test_a_bad_provider_list_is_refused(names: str, complaint: str) -> None:
    environ = {**_provider_environ(), "GRIDLINK_OIDC_PROVIDERS": names}
    with pytest.raises(SettingsError, match=f"^GRIDLINK_OIDC_PROVIDERS: .*{complaint}"):
        Settings.from_env(environ)


def test_a_provider_without_its_variables_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^GRIDLINK_OIDC_OKTA_ISSUER: must be set"):
        Settings.from_env({"GRIDLINK_OIDC_PROVIDERS": "okta"})


def test_the_client_secret_is_never_shown() -> None:
    settings = Settings.from_env(_provider_environ())
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.oidc_providers)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(_provider_environ(ISSUER="ftp://gitlab.example"))
    assert SECRET not in str(caught.value)


def test_a_bad_issuer_stops_the_command_with_one_line_without_the_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gridlink.cli", "migrate"],
        env={**_provider_environ(ISSUER="http://idp.example"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gridlink: GRIDLINK_OIDC_GITLAB_ISSUER: must be an https URL")
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://idp.example/token", True),
        ("http://127.0.0.1:9400/token", True),
        ("http://[::1]:9400/", True),
        ("http://localhost:9400/", True),
        ("http://idp.example/token", False),
        ("http://127.0.0.1.idp.example/", False),
        ("https://user:pass@idp.example/", False),
        ("https://idp.example:port/", False),
        ("javascript:alert(1)", False),
        ("file:///etc/passwd", False),
    ],
)
def test_only_https_or_loopback_http_urls_are_allowed(url: str, allowed: bool) -> None:
    assert is_allowed_url(url) is allowed
