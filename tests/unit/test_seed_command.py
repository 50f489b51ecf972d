"""The seed command line that staging and the swarm run, read back by the CLI's own parser."""

from __future__ import annotations

from gridlink.cli import build_parser
from infra.seeding import seed_command


def test_the_seed_command_line_carries_no_password_and_reads_it_from_standard_input() -> None:
    command = seed_command((200, 4, 5))

    parsed = build_parser().parse_args(command[1:])

    assert parsed.password_file == "-"
    assert not any("--password=" in part for part in command)
    assert (parsed.users, parsed.grids, parsed.links, parsed.warm) == ("200", "4", "5", True)
