"""The supervisor's pure parts: restart backoff and worker ports."""

from __future__ import annotations

from consumer.workers import BACKOFF_INITIAL_S, BACKOFF_MAX_S, next_backoff, worker_port


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
