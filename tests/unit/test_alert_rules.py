"""The alert rules fire on the faults they name and stay silent otherwise (``promtool test rules``).

Each case gives input series in promtool's notation (one sample every 15 s,
``a+bxn`` grows by b n times), a time, and the alerts expected firing then:
none is a case that must stay silent. The expected annotations are the
rule's own, with its ``{{ $labels.x }}`` filled in, so promtool checks the
templates render too. Every rule needs at least one case of each kind.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.monitoring import ALERT_RULES, promtool

INTERVAL = "15s"
SCOPE = {"scope": "gridlink"}


def patroni(metric: str, host: str, values: str) -> tuple[str, str]:
    return _series(metric, {"job": "patroni", "instance": host, "name": host, **SCOPE}, values)


def api(metric: str, values: str, host: str = "api1", **labels: str) -> tuple[str, str]:
    return _series(metric, {"job": "gridlink-api", "instance": host, **labels}, values)


def target(metric: str, job: str, host: str, values: str, **labels: str) -> tuple[str, str]:
    return _series(metric, {"job": job, "instance": host, **labels}, values)


def _series(metric: str, labels: dict[str, str], values: str) -> tuple[str, str]:
    inside = ",".join(f'{name}="{value}"' for name, value in labels.items())
    return f"{metric}{{{inside}}}", values


@dataclass(frozen=True)
class Case:
    """One promtool test: input series, when to look, and the alert's firing label sets."""

    alert: str
    series: tuple[tuple[str, str], ...]
    at: str
    fires: tuple[dict[str, str], ...] = field(default=())


CASES = (
    # A replica past the router's 5 s bound for 30 s; a shorter excursion is not an alert.
    Case(
        "ReplicaLagHigh",
        (api("gridlink_replica_lag_seconds", "1 8x8", replica="db2", host="10.77.0.12"),),
        "1m",
        ({"replica": "db2"},),
    ),
    Case(
        "ReplicaLagHigh",
        (api("gridlink_replica_lag_seconds", "8 8 1x6", replica="db2", host="10.77.0.12"),),
        "1m",
    ),
    # 100 MB of WAL to replay on db2; the primary's own replayed position (0) is no lag.
    Case(
        "ReplicaReplayBehind",
        (
            patroni("patroni_xlog_location", "db1", "1e9x12"),
            patroni("patroni_xlog_location", "db2", "0x12"),
            patroni("patroni_replica", "db1", "0x12"),
            patroni("patroni_replica", "db2", "1x12"),
            patroni("patroni_xlog_replayed_location", "db1", "0x12"),
            patroni("patroni_xlog_replayed_location", "db2", "9e8x12"),
        ),
        "2m",
        ({"job": "patroni", "instance": "db2", "name": "db2", **SCOPE},),
    ),
    Case(
        "ReplicaReplayBehind",
        (
            patroni("patroni_xlog_location", "db1", "1e9x12"),
            patroni("patroni_replica", "db1", "0x12"),
            patroni("patroni_replica", "db2", "1x12"),
            patroni("patroni_xlog_replayed_location", "db1", "0x12"),
            patroni("patroni_xlog_replayed_location", "db2", "999e6x12"),
        ),
        "2m",
    ),
    # The primary demoted and nobody promoted; and no Patroni answering at all.
    Case(
        "NoPrimary",
        (patroni("patroni_primary", "db1", "1 0x8"), patroni("patroni_primary", "db2", "0x8")),
        "1m",
        (SCOPE,),
    ),
    Case("NoPrimary", (target("up", "patroni", "db1", "0x8"),), "1m", ({},)),
    Case(
        "NoPrimary",
        (patroni("patroni_primary", "db1", "1 0 0 1x6"), patroni("patroni_primary", "db2", "0x8")),
        "1m",
    ),
    Case(
        "TwoPrimaries",
        (patroni("patroni_primary", "db1", "1x8"), patroni("patroni_primary", "db2", "0 1x7")),
        "1m",
        (SCOPE,),
    ),
    Case(
        "TwoPrimaries",
        (patroni("patroni_primary", "db1", "1x8"), patroni("patroni_primary", "db2", "0 1 0x6")),
        "1m",
    ),
    # db1 killed at 10 min, db2 promoted: an alert on db2 for the next 10 minutes, then silence.
    Case(
        "PostgresFailover",
        (
            patroni("patroni_primary", "db1", "1x40"),
            patroni("patroni_primary", "db2", "0x40 1x60"),
            patroni("patroni_primary", "db3", "0x100"),
        ),
        "12m",
        ({"job": "patroni", "instance": "db2", "name": "db2", **SCOPE},),
    ),
    Case(
        "PostgresFailover",
        (
            patroni("patroni_primary", "db1", "1x40"),
            patroni("patroni_primary", "db2", "0x40 1x60"),
        ),
        "22m",
    ),
    # The first primary of a fresh cluster, and an old primary demoted, are no failover.
    Case(
        "PostgresFailover",
        (
            patroni("patroni_primary", "db1", "1x20 0x20"),
            patroni("patroni_primary", "db2", "1x40"),
        ),
        "8m",
    ),
    Case(
        "DatabaseHostMissing",
        (target("up", "patroni", "db3", "1 0x8"),),
        "1m",
        ({"job": "patroni", "instance": "db3"},),
    ),
    Case("DatabaseHostMissing", (target("up", "patroni", "db3", "1 0 1x6"),), "1m"),
    # The primary and one streaming standby are the minimum; db2 stopped streaming.
    Case(
        "SynchronousCapacityLow",
        (
            patroni("patroni_primary", "db1", "1x8"),
            patroni("patroni_primary", "db2", "0x8"),
            patroni("patroni_postgres_streaming", "db1", "0x8"),
            patroni("patroni_postgres_streaming", "db2", "1 0x7"),
        ),
        "1m",
        (SCOPE,),
    ),
    Case(
        "SynchronousCapacityLow",
        (
            patroni("patroni_primary", "db1", "1x8"),
            patroni("patroni_primary", "db2", "0x8"),
            patroni("patroni_primary", "db3", "0x8"),
            patroni("patroni_postgres_streaming", "db1", "0x8"),
            patroni("patroni_postgres_streaming", "db2", "1x8"),
            patroni("patroni_postgres_streaming", "db3", "0x8"),
        ),
        "1m",
    ),
    Case("ChangeStreamBehind", (api("gridlink_stream_lag_seconds", "0 45x10"),), "2m", ({},)),
    Case("ChangeStreamBehind", (api("gridlink_stream_lag_seconds", "0 10x10"),), "2m"),
    Case(
        "ChangeStreamDown",
        (api("gridlink_stream_up", "1 0x10"), api("gridlink_stream_up", "1 0x10", host="api2")),
        "2m",
        ({},),
    ),
    Case(
        "ChangeStreamDown",
        (api("gridlink_stream_up", "1 0x10"), api("gridlink_stream_up", "1x10", host="api2")),
        "2m",
    ),
    # Half the lookups miss at 8 a second; 2% miss; and an idle service says nothing.
    Case(
        "CacheHitRatioLow",
        (
            api("gridlink_profile_cache_lookups_total", "0+60x50", result="hit"),
            api("gridlink_profile_cache_lookups_total", "0+60x50", result="miss"),
        ),
        "12m",
        ({},),
    ),
    Case(
        "CacheHitRatioLow",
        (
            api("gridlink_profile_cache_lookups_total", "0+600x50", result="hit"),
            api("gridlink_profile_cache_lookups_total", "0+15x50", result="miss"),
        ),
        "12m",
    ),
    Case(
        "CacheHitRatioLow",
        (
            api("gridlink_profile_cache_lookups_total", "0+1x50", result="hit"),
            api("gridlink_profile_cache_lookups_total", "0+1x50", result="miss"),
        ),
        "12m",
    ),
    Case(
        "ApiErrorsHigh",
        (
            api("gridlink_http_requests_total", "0+100x20", route="/u/{username}", status="200"),
            api("gridlink_http_requests_total", "0+20x20", route="/u/{username}", status="503"),
        ),
        "4m",
        ({},),
    ),
    Case(
        "ApiErrorsHigh",
        (
            api("gridlink_http_requests_total", "0+100x20", route="/u/{username}", status="200"),
            api("gridlink_http_requests_total", "0+1x20", route="/u/{username}", status="503"),
        ),
        "4m",
    ),
    Case(
        "LoadBalancerErrorsHigh",
        (
            target(
                "haproxy_frontend_http_requests_total", "haproxy", "lb1", "0+100x20", proxy="api"
            ),
            target(
                "haproxy_frontend_http_responses_total",
                "haproxy",
                "lb1",
                "0+20x20",
                proxy="api",
                code="5xx",
            ),
        ),
        "4m",
        ({},),
    ),
    Case(
        "LoadBalancerErrorsHigh",
        (
            target(
                "haproxy_frontend_http_requests_total", "haproxy", "lb1", "0+100x20", proxy="api"
            ),
            target(
                "haproxy_frontend_http_responses_total",
                "haproxy",
                "lb1",
                "0+0x20",
                proxy="api",
                code="5xx",
            ),
        ),
        "4m",
    ),
    Case(
        "ApiHostMissing",
        (target("up", "gridlink-api", "api2", "1 0x8"),),
        "1m",
        ({"job": "gridlink-api", "instance": "api2"},),
    ),
    Case("ApiHostMissing", (target("up", "gridlink-api", "api2", "1x8"),), "1m"),
    # The exporter answers (up 1) but its Redis does not (redis_up 0).
    Case(
        "RedisMissing",
        (target("up", "redis", "redis1", "1x8"), target("redis_up", "redis", "redis1", "1 0x7")),
        "1m",
        ({"job": "redis", "instance": "redis1"},),
    ),
    Case(
        "RedisMissing",
        (target("up", "redis", "redis1", "1x8"), target("redis_up", "redis", "redis1", "1x8")),
        "1m",
    ),
    Case(
        "RedisMasterMissing",
        (
            target("redis_instance_info", "redis", "redis1", "1x8", role="slave"),
            target("redis_instance_info", "redis", "redis2", "1x8", role="slave"),
        ),
        "1m",
        ({},),
    ),
    Case(
        "RedisMasterMissing",
        (
            target("redis_instance_info", "redis", "redis1", "1x8", role="slave"),
            target("redis_instance_info", "redis", "redis2", "1x8", role="master"),
        ),
        "1m",
    ),
    Case(
        "SentinelMissing",
        (target("up", "sentinel", "redis3", "1 0x7"),),
        "1m",
        ({"job": "sentinel", "instance": "redis3"},),
    ),
    Case(
        "SentinelMissing",
        (
            target("up", "sentinel", "redis3", "1x8"),
            target("redis_up", "sentinel", "redis3", "1x8"),
        ),
        "1m",
    ),
    Case(
        "LoadBalancerMissing",
        (target("up", "haproxy", "lb1", "1 0x7"),),
        "1m",
        ({"job": "haproxy", "instance": "lb1"},),
    ),
    Case("LoadBalancerMissing", (target("up", "haproxy", "lb1", "1x8"),), "1m"),
    # lb1 fails (3) at 1 min and lb2 takes the address (2): an alert on lb2 for 10 minutes.
    Case(
        "FloatingAddressMoved",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "2x4 3x60"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "1x4 2x60"),
        ),
        "2m",
        ({"job": "keepalived", "instance": "lb2"},),
    ),
    Case(
        "FloatingAddressMoved",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "2x4 3x60"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "1x4 2x60"),
        ),
        "12m",
    ),
    Case(
        "FloatingAddressMoved",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "2x60"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "1x60"),
        ),
        "2m",
    ),
    Case(
        "FloatingAddressHolders",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "2x8"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "1 2x7"),
        ),
        "1m",
        ({},),
    ),
    Case(
        "FloatingAddressHolders",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "1x8"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "3x8"),
        ),
        "1m",
        ({},),
    ),
    Case(
        "FloatingAddressHolders",
        (
            target("keepalived_vrrp_state", "keepalived", "lb1", "2x8"),
            target("keepalived_vrrp_state", "keepalived", "lb2", "1x8"),
        ),
        "1m",
    ),
)


def rules() -> dict[str, dict[str, Any]]:
    """Return every alerting rule of the rules file by name."""
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def expected_annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """Return the rule's annotations as Prometheus renders them for an alert with ``labels``."""
    return {
        name: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for name, text in rule["annotations"].items()
    }


def promtool_test(case: Case, rule: dict[str, Any]) -> dict[str, Any]:
    """Return the case as one promtool unit test (the format of ``promtool test rules``)."""
    alerts = []
    for labels in case.fires:
        every = {**labels, **rule.get("labels", {})}
        alerts.append({"exp_labels": every, "exp_annotations": expected_annotations(rule, every)})
    return {
        "interval": INTERVAL,
        "input_series": [{"series": name, "values": values} for name, values in case.series],
        "alert_rule_test": [{"eval_time": case.at, "alertname": case.alert, "exp_alerts": alerts}],
    }


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *arguments], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_rules_file_is_valid() -> None:
    checked = run_promtool("check", "rules", str(ALERT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_rule_has_a_summary_a_runbook_and_a_severity() -> None:
    for name, rule in rules().items():
        assert rule["annotations"].get("summary"), name
        assert rule["annotations"].get("runbook"), name
        assert rule["labels"].get("severity") in ("warning", "critical"), name


def test_every_rule_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    firing = {case.alert for case in CASES if case.fires}
    silent = {case.alert for case in CASES if not case.fires}
    assert firing == set(rules()) == silent


def case_id(case: Case) -> str:
    return f"{case.alert}-{'fires' if case.fires else 'silent'}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_rule_fires_exactly_as_the_case_says(case: Case, tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": INTERVAL,
        "tests": [promtool_test(case, rules()[case.alert])],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(json.dumps(tests, indent=2))  # JSON is YAML, as promtool reads it
    tested = run_promtool("test", "rules", str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr
