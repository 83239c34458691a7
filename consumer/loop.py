"""The event loop the service, its tools and the benchmark's processes run on (not the demo provider): uvloop
where it is installed (a dependency on Linux and macOS), else asyncio's own. uvloop's C transports roughly
halve the per-request cost of the HTTP server and client."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop (uvloop when available)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
