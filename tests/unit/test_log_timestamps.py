"""The JSON log line's timestamp, rendered once per second and then per line."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import orjson

from gridlink.web.logs import JsonFormatter, utc_timestamp

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_each_line_carries_its_own_microseconds_in_api_md_time_format():
    formatter = JsonFormatter()
    # Two lines in one second (the second's text is reused), then the next second.
    for created in (1764369600.25, 1764369600.5, 1764369601.000125, 1764369601.999999):
        record = logging.makeLogRecord({"msg": "request", "created": created})
        stamp = orjson.loads(formatter.format(record))["timestamp"]
        assert TIMESTAMP.match(stamp)
        assert stamp == utc_timestamp(datetime.fromtimestamp(created, UTC))
