"""The supervisor's pure parts: restart backoff, worker ports, its log lines."""

from __future__ import annotations

import os
import re

import orjson
import pytest
import structlog

from consumer.supervisor import BACKOFF_INITIAL_S, BACKOFF_MAX_S, Log, next_backoff
from consumer.testing import capture_logs
from consumer.workers import worker_port


def test_restart_delay_doubles_up_to_its_cap_and_resets_after_a_long_run():
    delays = []
    current = BACKOFF_INITIAL_S
    for _ in range(8):
        delay, current = next_backoff(current, ran_s=2.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert current == BACKOFF_MAX_S
    assert next_backoff(current, ran_s=60.0) == (1.0, 2.0)
    assert next_backoff(current, ran_s=59.9) == (30.0, 30.0)


def test_worker_ports_follow_the_configured_port_and_zero_stays_any():
    assert [worker_port(9400, i) for i in range(3)] == [9400, 9401, 9402]
    assert [worker_port(0, i) for i in range(3)] == [0, 0, 0]


@pytest.fixture
def pipe():
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def test_the_supervisors_json_lines_have_the_services_shape_and_honour_the_level(pipe):
    read, write = pipe
    log = Log("warning", "json", fd=write)
    log.info("worker started", worker=0)
    log.warning("worker exited unexpectedly: restarting it", worker=1, code=-9, signal="SIGKILL")
    log.error("worker could not start: stopping the others", worker=0, code=2)
    lines = os.read(read, 65536).splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert {k: v for k, v in first.items() if k != "timestamp"} == {
        "event": "worker exited unexpectedly: restarting it",
        "worker": 1,
        "code": -9,
        "signal": "SIGKILL",
        "level": "warning",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", first["timestamp"])  # no fraction at .000000
    assert second["event"] == "worker could not start: stopping the others" and second["level"] == "error"


def test_the_supervisors_json_lines_match_the_services_logging(pipe):
    read, write = pipe
    Log("info", "json", fd=write).info("worker started", worker=1, pid=42)
    ours = orjson.loads(os.read(read, 65536))
    with capture_logs(level="info") as buffer:
        structlog.get_logger("consumer.workers").info("worker started", worker=1, pid=42)
    theirs = orjson.loads(buffer.getvalue().splitlines()[0])
    assert sorted(ours) == sorted(theirs)
    assert {k: v for k, v in ours.items() if k != "timestamp"} == {k: v for k, v in theirs.items() if k != "timestamp"}
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
    assert re.fullmatch(stamp, ours["timestamp"]) and re.fullmatch(stamp, theirs["timestamp"])


def test_the_supervisors_console_lines_name_level_event_and_sorted_fields(pipe):
    read, write = pipe
    Log("info", "console", fd=write).info("worker started", worker=1, pid=42, launch=1)
    Log("info", "auto", fd=write).info("workers stopped", code=0)  # a pipe is not a terminal: JSON
    console, auto = os.read(read, 65536).decode().splitlines()
    assert re.fullmatch(r"\S+Z \[info     \] worker started +launch=1 pid=42 worker=1", console)
    assert orjson.loads(auto)["event"] == "workers stopped"
