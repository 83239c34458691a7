"""A fast fake SMS provider for benchmarks: a minimal HTTP/1.1 keep-alive server on asyncio streams' protocol
layer, so that it costs as little CPU as possible beside the process under test.

- `POST /batch`: JSON object with an array under `messages` -> `200 {"results": [{"id", "status": "accepted"}]}`,
  one result per record, by position.
- `POST /single`: any body -> `200 {"id": "...", "status": "queued"}`.
- `GET /stats`: requests and messages received so far.

`--latency-ms` delays every answer (the connection stays busy meanwhile, as with a real provider).

    python -m bench.provider --port 8080 [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from functools import lru_cache
from typing import cast

import orjson

from consumer import loop

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}
_MAX_HEAD = 64 * 1024


@lru_cache(maxsize=1024)
def _batch_answer(count: int) -> bytes:
    return orjson.dumps({"results": [{"id": f"r{i}", "status": "accepted"} for i in range(count)]})


def _response(status: int, body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
        % (status, _REASONS.get(status, b"OK"), len(body))
    )
    return head + body


class Counters:
    """What the provider received."""

    def __init__(self) -> None:
        self.requests = 0
        self.messages = 0
        self.largest_batch = 0
        self.bad_requests = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "messages": self.messages,
            "largest_batch": self.largest_batch,
            "bad_requests": self.bad_requests,
        }


class _Connection(asyncio.Protocol):
    def __init__(self, counters: Counters, latency: float) -> None:
        self._counters = counters
        self._latency = latency
        self._buffer = bytearray()
        self._need: int | None = None
        self._target = b""
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            if self._need is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > _MAX_HEAD:
                        self._transport.close()
                    return
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                lines = head.split(b"\r\n")
                parts = lines[0].split(b" ")
                self._target = parts[0] + b" " + (parts[1] if len(parts) > 1 else b"")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    lowered = name.strip().lower()
                    if lowered == b"content-length":
                        length = int(value.strip())
                    elif lowered == b"transfer-encoding":
                        self._send(_response(411, b'{"error":"send a Content-Length"}'))
                        self._transport.close()
                        return
                self._need = length
            if len(self._buffer) < self._need:
                return
            body = bytes(self._buffer[: self._need])
            del self._buffer[: self._need]
            self._need = None
            self._send(self._handle(self._target, body))

    def _send(self, payload: bytes) -> None:
        if self._latency:
            self._loop.call_later(self._latency, self._write, payload)
        else:
            self._write(payload)

    def _write(self, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(payload)

    def _handle(self, target: bytes, body: bytes) -> bytes:
        counters = self._counters
        path = target.split(b" ", 1)[1].split(b"?", 1)[0] if b" " in target else b""
        if target.startswith(b"POST ") and path == b"/batch":
            try:
                messages = orjson.loads(body)["messages"]
                count = len(messages)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                counters.bad_requests += 1
                return _response(400, b'{"error":"malformed batch"}')
            counters.requests += 1
            counters.messages += count
            counters.largest_batch = max(counters.largest_batch, count)
            return _response(200, _batch_answer(count))
        if target.startswith(b"POST ") and path == b"/single":
            counters.requests += 1
            counters.messages += 1
            counters.largest_batch = max(counters.largest_batch, 1)
            return _response(200, b'{"id":"s%d","status":"queued"}' % counters.requests)
        if target.startswith(b"GET ") and path == b"/stats":
            return _response(200, orjson.dumps(counters.as_dict()))
        return _response(404, b'{"error":"not found"}')

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int, latency_s: float) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counters, latency_s), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench provider listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()
    print("bench provider stats " + orjson.dumps(counters.as_dict()).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    loop.run(serve(args.host, args.port, args.latency_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
