"""Ports for the servers started here lie outside the kernel's ephemeral range, so no outgoing connection takes
one between choosing it and binding it."""

from __future__ import annotations

import socket

from consumer.ports import candidates, ephemeral_range, free_ports, is_free


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path):
    path = tmp_path / "range"
    path.write_text("40000\t50000\n")
    assert ephemeral_range(path) == (40000, 50000)
    path.write_text("garbage")
    assert ephemeral_range(path) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_blocks_lie_below_the_ephemeral_range_or_above_it_when_there_is_no_room_below():
    below = candidates(3, (32768, 60999))
    assert below[0] >= 10_000 and below[-1] + 2 < 32768
    assert candidates(3, (10_003, 60999))[-1] == 10_000
    above = candidates(3, (10_001, 60999))
    assert above[0] == 61000 and above[-1] + 2 == 65535
    assert not candidates(3, (1024, 65534))


def test_without_room_outside_the_ephemeral_range_the_kernel_chooses(monkeypatch):
    monkeypatch.setattr("consumer.ports.ephemeral_range", lambda: (1024, 65535))
    first = free_ports(2)
    assert all(is_free(port) for port in (first, first + 1))


def test_free_ports_are_a_free_block_outside_the_ephemeral_range():
    low, high = ephemeral_range()
    for count in (1, 2, 5):
        first = free_ports(count)
        block = range(first, first + count)
        assert all(not low <= port <= high for port in block)
        assert all(is_free(port) for port in block)


def test_a_block_with_a_port_in_use_or_excluded_is_passed_over(monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", free_ports()))
        listening.listen()
        taken = listening.getsockname()[1]
        assert not is_free(taken)
        with socket.socket() as client:
            client.connect(("127.0.0.1", taken))
            assert not is_free(client.getsockname()[1])  # a connection's local port counts as taken
        good = free_ports(3, exclude=range(taken - 2, taken + 8))
        tried = iter([taken - 1, taken + 3, good])  # holds `taken`; holds an excluded port; free
        monkeypatch.setattr("consumer.ports.random.choice", lambda starts: next(tried))
        assert free_ports(3, exclude={taken + 5}) == good
        assert next(tried, None) is None
