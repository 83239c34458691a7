"""Ceiling H: a minimal aiohttp client posting prepared request bodies to the fake provider.

It posts exactly the bodies the service would send for the same events (rendered beforehand with the
provider's template), with the same concurrency, over one session, and reads every answer. Prints one JSON
line with what it measured.

    python -m bench.ceiling_http --bodies FILE --url URL --concurrency 64 [--content-type TYPE]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from pathlib import Path

import aiohttp
import orjson

from consumer import loop

_HEADER = struct.Struct("<II")


def write_bodies(path: Path, bodies: list[tuple[int, bytes]]) -> None:
    """Store `(messages carried, body)` pairs for the ceiling process."""
    with path.open("wb") as out:
        for count, body in bodies:
            out.write(_HEADER.pack(count, len(body)))
            out.write(body)


def read_bodies(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        count, length = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        out.append((count, data[pos : pos + length]))
        pos += length
    return out


async def post_all(
    url: str, bodies: list[tuple[int, bytes]], concurrency: int, content_type: str
) -> dict[str, float | int]:
    headers = {"Content-Type": content_type}
    next_index = iter(range(len(bodies)))
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for i in next_index:
            async with session.post(url, data=bodies[i][1], headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # One warm-up request opens a connection; it is not counted.
        async with session.post(url, data=bodies[0][1], headers=headers) as response:
            await response.read()
        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {
        "requests": len(bodies),
        "messages": sum(count for count, _ in bodies),
        "seconds": elapsed,
        "cpu_s": cpu,
        "failures": failures,
        "peak_rss_bytes": _peak_rss(),
    }


def _peak_rss() -> int:
    """This process's resident high-water mark (`ru_maxrss` would include the parent's, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_http", description=__doc__)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--content-type", default="application/json; charset=utf-8")
    args = parser.parse_args(argv)
    bodies = read_bodies(args.bodies)
    result = loop.run(post_all(args.url, bodies, args.concurrency, args.content_type))
    print("RESULT " + orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
