"""Text fields hold no control or bidi characters; URLs cannot disguise their host."""

from __future__ import annotations

import pytest

from gridlink.errors import InvalidRequest
from gridlink.schemas.accounts import LoginIn, MeUpdateIn, SignupIn
from gridlink.schemas.base import load
from gridlink.schemas.grids import GridIn
from gridlink.schemas.links import LinkIn, LinkPatch

HIDDEN = [
    "\x01", "\t", "\n", "\x1b", "\x7f", "\x85", "\x9f", "\u061c", "\u200e", "\u200f",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
]  # fmt: skip

SIGNUP = {"username": "ada_l", "email": "ada@example.com", "password": "correct horse"}
LINK = {"grid": "gr_" + "0" * 32, "url": "https://example.com/"}


def refused_fields(schema: object, body: dict[str, object]) -> list[str]:
    with pytest.raises(InvalidRequest) as refused:
        load(schema, body)  # type: ignore[arg-type]
    assert refused.value.fields is not None
    return sorted(refused.value.fields)


@pytest.mark.parametrize("character", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
@pytest.mark.parametrize(
    ("schema", "body", "field", "value"),
    [
        (GridIn(), {}, "title", "Work{}"),
        (LinkIn(), LINK, "title", "{}Portfolio"),
        (LinkIn(), LINK, "url", "https://example.com/{}"),
        (LinkPatch(), {}, "background", "/bg{}.jpg"),
        (MeUpdateIn(), {}, "display_name", "Ada{}"),
        (SignupIn(), SIGNUP, "username", "ada{}"),
        (SignupIn(), SIGNUP, "display_name", "{}gnp.exe"),
    ],
    ids=["grid title", "link title", "url", "background", "display_name", "username", "sign-up"],
)
def test_control_and_bidi_characters_are_refused_naming_the_field(
    schema: object, body: dict[str, object], field: str, value: str, character: str
) -> None:
    assert refused_fields(schema, {**body, field: value.format(character)}) == [field]


def test_other_unicode_text_is_kept_as_sent() -> None:
    title = "Café \u05e9\u05dc\u05d5\u05dd \U0001f600 \u200b zero-width space"
    assert load(GridIn(), {"title": title}) == {"title": title}


def test_a_password_may_hold_any_character_but_nul() -> None:
    password = "tab\there \u202e reversed"
    assert load(LoginIn(), {"username": "ada", "password": password})["password"] == password
    assert refused_fields(LoginIn(), {"username": "ada", "password": "a\x00b"}) == ["password"]


@pytest.mark.parametrize(
    "url",
    [
        "https://google.com@evil.example/",
        "https://user:secret@example.com/",
        "https://@example.com/",
        "https://example.com\\@evil.example/",
        "https://ex\u3002\u3002ample.com/",  # an empty label: no IDNA name
    ],
)
def test_a_url_that_disguises_its_host_is_refused(url: str) -> None:
    assert refused_fields(LinkPatch(), {"url": url}) == ["url"]
    assert refused_fields(LinkPatch(), {"background": url}) == ["background"]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "https://bücher.example/",
        "https://xn--bcher-kva.example/",
        "http://127.0.0.1:8000/path@with-an-at",
        "https://[2001:db8::1]/",
    ],
)
def test_ascii_and_international_hosts_are_kept(url: str) -> None:
    assert load(LinkPatch(), {"url": url, "background": url}) == {"url": url, "background": url}


@pytest.mark.parametrize("path", ["//evil.example/x.png", "/\\evil.example/x.png"])
def test_a_background_path_cannot_name_another_host(path: str) -> None:
    assert refused_fields(LinkPatch(), {"background": path}) == ["background"]


def test_a_background_path_of_this_server_is_kept() -> None:
    for path in ["/", "/bg/colours.jpg", "/a//b.png"]:
        assert load(LinkPatch(), {"background": path}) == {"background": path}
