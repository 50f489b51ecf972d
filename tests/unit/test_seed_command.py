"""The seed command line that staging and the swarm run, read back by the CLI's own parser."""

from __future__ import annotations

import pytest

from gridlink.cli import build_parser
from infra.seeding import seed_command


@pytest.mark.parametrize("password", ["-starts-with-a-dash", "--looks-like-an-option", "plain"])
def test_any_random_password_reaches_gridlink_seed_as_itself(password: str) -> None:
    command = seed_command((200, 4, 5), password)

    parsed = build_parser().parse_args(command[1:])

    assert parsed.password == password
    assert (parsed.users, parsed.grids, parsed.links, parsed.warm) == ("200", "4", "5", True)
