"""Free loopback ports for servers started here: the dev broker's nodes, the bench's and the tests' servers.

A port handed out by the kernel for `bind(("127.0.0.1", 0))` lies in its ephemeral range, the same range it
takes the local ports of outgoing connections from. Between choosing such a port and the server binding it (a
JVM starting, a child process importing), any connection opened on the machine may take it, and the bind then
fails with "address already in use" for as long as that connection lives. Linux even gives `bind` odd ports and
`connect` even ones, so the port after a kernel-chosen one is the very kind a connection takes next. The ports
chosen here lie below the ephemeral range, where no outgoing connection lands.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Collection
from pathlib import Path

_LOWEST = 10_000  # below this lie the well-known and commonly configured ports
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL = (32_768, 60_999)  # Linux's default


def ephemeral_range(path: Path = _RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections, both ends included."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return low, high


def candidates(count: int, ephemeral: tuple[int, int]) -> range:
    """The first ports of the blocks of `count` ports in a row that lie outside `ephemeral`: below it when there
    is room there, otherwise above it; empty when the ephemeral range leaves no room at all."""
    low, high = ephemeral
    if low - count >= _LOWEST:
        return range(_LOWEST, low - count + 1)
    return range(high + 1, 65_536 - count + 1)


def is_free(port: int) -> bool:
    """Nothing listens on or connects from loopback `port` now (a socket in TIME_WAIT does not count: servers set
    SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, exclude: Collection[int] = ()) -> int:
    """The first of `count` loopback ports in a row that are free now, outside the ephemeral range when it
    leaves room (else wherever the kernel offers), and outside `exclude`."""
    starts = candidates(count, ephemeral_range())
    for _ in range(200):
        if starts:
            first = random.choice(starts)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                first = int(probe.getsockname()[1])
        block = range(first, first + count)
        if block[-1] > 65_535 or any(port in exclude for port in block):
            continue
        with contextlib.ExitStack() as held:  # hold each port while the next is tried
            try:
                for port in block:
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {count} free loopback ports in a row")
