"""The staging and failover modules fail, not skip, wherever their promises must be proved."""

from __future__ import annotations

import pytest

from tests.support.staging import REQUIRE_STAGING, Verdict, decide, staging_required

ROOT, USER = 0, 1000


def verdict(*, euid: int, required: bool) -> Verdict:
    """Decide for a machine with `ip netns` and no staging left up."""
    return decide(euid=euid, has_netns=True, leftover=False, required=required).verdict


def test_a_run_as_root_with_ip_netns_and_nothing_left_up_runs() -> None:
    assert verdict(euid=ROOT, required=False) is Verdict.RUN
    assert verdict(euid=ROOT, required=True) is Verdict.RUN


def test_a_staging_left_up_is_torn_down_before_the_run() -> None:
    for required in (False, True):
        decision = decide(euid=ROOT, has_netns=True, leftover=True, required=required)
        assert decision.verdict is Verdict.TEAR_DOWN_FIRST
        assert "left up" in decision.reason


def test_a_run_that_requires_staging_fails_without_root() -> None:
    decision = decide(euid=USER, has_netns=True, leftover=False, required=True)
    assert decision.verdict is Verdict.FAIL
    assert "root" in decision.reason
    assert REQUIRE_STAGING in decision.reason


def test_a_run_as_root_fails_without_ip_netns_even_when_not_required() -> None:
    for required in (False, True):
        decision = decide(euid=ROOT, has_netns=False, leftover=False, required=required)
        assert decision.verdict is Verdict.FAIL
        assert "ip netns" in decision.reason


def test_only_a_run_neither_root_nor_required_skips_saying_why() -> None:
    for has_netns in (False, True):
        decision = decide(euid=USER, has_netns=has_netns, leftover=False, required=False)
        assert decision.verdict is Verdict.SKIP
        assert "root" in decision.reason


def test_the_environment_says_whether_staging_is_required() -> None:
    assert staging_required({REQUIRE_STAGING: "1"})
    assert not staging_required({REQUIRE_STAGING: "0"})
    assert not staging_required({})
    with pytest.raises(ValueError, match=REQUIRE_STAGING):
        staging_required({REQUIRE_STAGING: "yes"})
