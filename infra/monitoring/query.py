"""Ask a running Prometheus what it sees: active alerts, targets, an instant query.

What `gridlink staging status`, `make chaos` and the staging tests read.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from infra.http_client import fetch

TIMEOUT_SECONDS = 2.0


def _get(prometheus: str, path: str) -> Any:
    """Return the ``data`` of Prometheus's answer at ``host:port``, None if it does not answer."""
    try:
        reply = fetch(prometheus, "GET", path, timeout=TIMEOUT_SECONDS)
        document = json.loads(reply.body)
    except (OSError, ValueError):
        return None
    return document.get("data") if reply.status == 200 and isinstance(document, dict) else None


def active(prometheus: str) -> list[dict[str, Any]] | None:
    """Return the active alerts (pending and firing), or None if Prometheus does not answer."""
    data = _get(prometheus, "/api/v1/alerts")
    found = data.get("alerts") if isinstance(data, dict) else None
    return found if isinstance(found, list) else None


def firing(prometheus: str) -> list[str] | None:
    """Return the names of the alerts firing now, sorted; None if Prometheus does not answer."""
    found = active(prometheus)
    if found is None:
        return None
    return sorted({alert["labels"]["alertname"] for alert in found if alert["state"] == "firing"})


def instant(prometheus: str, promql: str) -> list[tuple[dict[str, str], float]] | None:
    """Return each series of an instant query with its value; None if Prometheus does not answer."""
    data = _get(prometheus, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        return None
    return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]
