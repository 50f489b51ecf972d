"""The request line's own path: the same JSON as a record's, written a batch at a time."""

from __future__ import annotations

import gc
import io
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gridlink.web import logs
from gridlink.web.batches import Batches, drain_all
from gridlink.web.logs import JsonFormatter, JsonLinesHandler, log_fields, log_request

FIELDS = {
    "method": "GET",
    "route": "/api/users/{username}",
    "path": "/api/users/ada",
    "status": 200,
    "duration_ms": 0.25,
    "read_source": "cache",
    "request_id": "r-1",
}


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("gridlink.tests.request-log")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def lines_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    "fields",
    [
        FIELDS,
        {},
        {"path": '/api/users/\u00e5sa"\n', "since": datetime(2026, 1, 2, tzinfo=UTC)},
    ],
    ids=["request", "no fields", "escaped and not JSON"],
)
def test_a_queued_request_line_is_the_line_a_record_of_it_makes(logger, fields):
    queued, recorded = io.StringIO(), io.StringIO()
    lines_handler = JsonLinesHandler(queued)
    lines_handler.setFormatter(JsonFormatter())
    record_handler = logging.StreamHandler(recorded)  # not a JsonLinesHandler: gets a record
    record_handler.setFormatter(JsonFormatter())
    logger.addHandler(lines_handler)
    logger.addHandler(record_handler)

    log_request(logger, fields)
    lines_handler.flush()

    assert queued.getvalue() == recorded.getvalue()
    (line,) = lines_of(queued)
    assert line["message"] == "request"
    assert line["level"] == "info"
    assert line["pid"] == os.getpid()
    assert {name: line[name] for name in fields} == orjson.loads(orjson.dumps(fields))


def test_records_are_written_at_once_and_request_lines_within_a_batch(logger):
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)

    log_fields(logger, "login_failed", {"user_id": 7})
    assert [line["message"] for line in lines_of(stream)] == ["login_failed"]

    log_request(logger, FIELDS)
    deadline = time.monotonic() + 30
    while len(lines_of(stream)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["message"] for line in lines_of(stream)] == ["login_failed", "request"]


def test_a_request_line_is_not_queued_below_the_loggers_level(logger):
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    log_request(logger, FIELDS)
    handler.flush()
    assert stream.getvalue() == ""


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_batch_is_written_in_whole_lines_of_at_most_pipe_buf_bytes(logger):
    stream = CountingStream()
    handler = JsonLinesHandler(stream)
    logger.addHandler(handler)
    for number in range(200):
        log_request(logger, {**FIELDS, "request_id": f"r-{number}"})
    handler.flush()

    assert len(stream.writes) > 1
    for chunk in stream.writes:
        assert len(chunk.encode()) <= select.PIPE_BUF
        assert chunk.endswith("\n")
    ids = [line["request_id"] for line in lines_of(stream)]
    assert ids == [f"r-{number}" for number in range(200)]


def test_a_forked_child_never_writes_what_its_parent_queued(logger, tmp_path: Path, monkeypatch):
    # The parent's writer thread never wakes in this test: nothing is writing as it forks.
    monkeypatch.setattr(JsonLinesHandler, "BATCH_SECONDS", 3600)
    path = tmp_path / "log"
    with path.open("a") as stream:
        handler = JsonLinesHandler(stream)
        logger.addHandler(handler)
        log_request(logger, {**FIELDS, "request_id": "parent"})
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's own exit
            log_request(logger, {**FIELDS, "request_id": "child"})
            handler.flush()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert status == 0
        handler.flush()
    ids = sorted(orjson.loads(line)["request_id"] for line in path.read_text().splitlines())
    assert ids == ["child", "parent"]


def test_batches_nobody_holds_any_more_are_collected():
    """The at-fork reset keeps no Batches alive: every Services a test connects makes one."""

    class Applied(list[list[int]]):
        pass  # a list that a weak reference can follow

    applied = Applied()
    batches = Batches[int](applied.append, interval=60, name="test")
    gone = weakref.ref(applied)
    del batches, applied
    gc.collect()
    assert gone() is None


def test_batches_apply_in_order_and_close_applies_the_rest():
    applied: list[list[int]] = []
    batches = Batches[int](applied.append, interval=60, name="test")  # the thread never gets to it
    for number in range(5):
        batches.put(number)
    batches.drain()
    batches.put(5)
    batches.close()
    assert applied == [[0, 1, 2, 3, 4], [5]]


def test_drain_all_applies_what_every_live_batches_queued():
    applied: list[list[int]] = []
    first = Batches[int](applied.append, interval=60, name="test")  # threads never get to them
    second = Batches[int](applied.append, interval=60, name="test")
    first.put(1)
    second.put(2)
    drain_all()
    assert sorted(applied) == [[1], [2]]


def test_a_record_written_while_the_writer_thread_writes_a_batch_never_deadlocks(
    logger, monkeypatch
):
    """``emit`` flushes (drains) under the handler's lock: the writer must not hold another."""
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    rendering, go = threading.Event(), threading.Event()
    render = logs.render_request_line

    def slow_render(*args: object, **kwargs: object) -> bytes:
        if threading.current_thread().name == "log-writer":
            rendering.set()
            go.wait()
        return render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logs, "render_request_line", slow_render)
    log_request(logger, FIELDS)
    assert rendering.wait(10), "the writer thread took the batch"

    emitted = threading.Event()

    def emit_a_record() -> None:
        handler.acquire()  # as Handler.handle does around emit
        try:
            emitted.set()
            handler.flush()  # as StreamHandler.emit does
        finally:
            handler.release()

    emitter = threading.Thread(target=emit_a_record, daemon=True)
    emitter.start()
    emitted.wait(0.5)  # it holds the handler's lock now, unless the writer does
    go.set()
    emitter.join(10)
    assert not emitter.is_alive(), "the record's flush and the writer thread deadlocked"
    handler.flush()
    assert [line["request_id"] for line in lines_of(stream)] == ["r-1"]


def test_a_batch_that_fails_is_logged_and_the_next_ones_are_still_applied(caplog):
    applied: list[list[int]] = []

    def apply(batch: list[int]) -> None:
        if batch[0] == 0:
            raise ValueError("the first batch")
        applied.append(batch)

    batches = Batches[int](apply, interval=0.01, name="failing")
    batches.put(0)
    deadline = time.monotonic() + 10
    while "a batch failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    batches.put(1)
    while not applied and time.monotonic() < deadline:
        time.sleep(0.01)
    batches.close()
    assert "failing: a batch failed" in caplog.text
    assert applied == [[1]]
