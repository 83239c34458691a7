"""Delivery-report load: `python -m bench.callbacks --rate 5000 --seconds 10 [--bootstrap HOST:PORT]`.

Runs the service (one provider with a `callback` section) in this process and fires form callbacks, each
with a provider message id of its own, at `--rate` per second from a separate process on loopback. Then it
reads the status topic and checks that every callback's status is there (no loss), and prints the achieved
rate and the latency of the callbacks (each answered only after Kafka acknowledged its status).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from consumer import loop
from consumer.app import Service
from consumer.config import parse_config
from consumer.testing import collect, create_topics, wait_for
from tests.support import kafka_section

TOKEN = "bench-callback-token"


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that reads whole responses (status line, headers, Content-Length
    body) and hands each status code to the request waiting for it. A load generator this small costs a
    fraction of a full HTTP client's CPU, which the service under test needs on a small machine."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self._buffer) < end + 4 + length:
            return
        code = int(self._buffer[9:12])
        self._buffer = self._buffer[end + 4 + length :]
        self._wake(code)

    def connection_lost(self, exc: Exception | None) -> None:
        self._wake(0)

    def _wake(self, code: int) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(code)


def _fire(url: str, rate: float, seconds: float, concurrency: int, first: int, step: int, out: Any) -> None:
    """A load generator (a child process): `rate` callbacks per second on a fixed schedule over `concurrency`
    keep-alive connections, provider ids `first`, `first + step`, ... A callback whose time has come while
    every connection is busy goes out as soon as one is free (so a slow service shows as latency)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = f"{parts.path}?{urlencode({'token': TOKEN})}"
    prefix = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
    ).encode()

    def request(i: int) -> bytes:
        body = urlencode(
            {"MessageSid": f"SMbench{first + i * step:09d}", "To": "+14155550100", "MessageStatus": "delivered"}
        ).encode()
        return prefix + str(len(body)).encode() + b"\r\n\r\n" + body

    async def run() -> None:
        loop = asyncio.get_running_loop()
        total = int(rate * seconds)
        latencies: list[float] = []
        failures: dict[int, int] = {}
        began = time.perf_counter()

        async def worker(w: int) -> None:
            transport, connection = await loop.create_connection(_Connection, host, port)
            try:
                for i in range(w, total, concurrency):
                    delay = began + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if connection.transport is None or connection.transport.is_closing():
                        transport, connection = await loop.create_connection(_Connection, host, port)
                    connection.waiter = loop.create_future()
                    start = time.perf_counter()
                    transport.write(request(i))
                    code = await connection.waiter
                    if code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        failures[code] = failures.get(code, 0) + 1
            finally:
                transport.close()

        await asyncio.gather(*(worker(w) for w in range(min(concurrency, total))))
        elapsed = time.perf_counter() - began
        out.send({"total": total, "ok": len(latencies), "failures": failures, "elapsed": elapsed, "lat": latencies})

    loop.run(run())


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


async def main_async(args: argparse.Namespace) -> int:
    kafka = kafka_section(args.bootstrap)
    config = parse_config(
        {
            "kafka": kafka,
            "observability": {"http_port": 0, "http_host": "127.0.0.1", "log_level": "warning"},
            "providers": {
                "bench": {
                    "url": "http://127.0.0.1:9/unused",
                    "format": "form",
                    "payload": {"to": "$$To", "text": "$$Body"},
                    "callback": {
                        "auth": {"type": "secret", "query": "token", "secret": TOKEN},
                        "message_id": "MessageSid",
                        "recipient": "To",
                        "status": "MessageStatus",
                        "statuses": {"delivered": "delivered", "undelivered": "undelivered"},
                    },
                }
            },
        },
        env={},
    )
    await create_topics(args.bootstrap, {kafka["input_topic"]: 1, kafka["status_topic"]: args.partitions})
    service = Service(config)
    task = asyncio.create_task(service.run())
    await wait_for(lambda: service.ops is not None and service.ops.port, 30, what="the operations server")
    assert service.ops is not None
    url = f"http://127.0.0.1:{service.ops.port}/callbacks/bench"
    cpu0 = os.times()
    spawn = multiprocessing.get_context("spawn")
    children, pipes = [], []
    n = args.processes
    for k in range(n):
        receive, send = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_fire, args=(url, args.rate / n, args.seconds, args.concurrency // n, k, n, send))
        child.start()
        children.append(child)
        pipes.append(receive)
    parts = []
    for receive in pipes:
        parts.append(await asyncio.to_thread(receive.recv))
    for child in children:
        child.join()
    cpu1 = os.times()
    result = {
        "total": sum(p["total"] for p in parts),
        "ok": sum(p["ok"] for p in parts),
        "failures": {c: sum(p["failures"].get(c, 0) for p in parts) for part in parts for c in part["failures"]},
        "elapsed": max(p["elapsed"] for p in parts),
        "lat": [x for p in parts for x in p["lat"]],
    }
    statuses = await collect(args.bootstrap, kafka["status_topic"], result["total"], timeout=60)
    service.request_stop()
    await asyncio.wait_for(task, 30)

    ids = {s.get("provider_message_id") for s in statuses}
    expected = {f"SMbench{i:09d}" for i in range(result["total"])}  # every process fires rate/n per second
    lost = len(expected - ids)
    lat = sorted(result["lat"])
    ms = 1000
    print(f"callbacks fired      {result['total']} at a target of {args.rate}/s for {args.seconds:g} s")
    print(f"answered 200         {result['ok']}   other answers: {result['failures'] or 'none'}")
    print(f"achieved rate        {result['ok'] / result['elapsed']:.0f}/s over {result['elapsed']:.2f} s")
    if lat:
        print(
            f"latency (to 200)     p50 {_quantile(lat, 0.5) * ms:.1f} ms  p99 {_quantile(lat, 0.99) * ms:.1f} ms  "
            f"max {lat[-1] * ms:.1f} ms"
        )
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"service CPU          {cpu:.1f} s ({cpu / result['elapsed'] * 100:.0f}% of one core)")
    print(f"statuses on topic    {len(statuses)}; lost {lost}; duplicates {len(statuses) - len(ids)}")
    return 0 if lost == 0 and result["ok"] == result["total"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--concurrency", type=int, default=128, help="callbacks in flight at most (keep-alive connections)"
    )
    parser.add_argument("--processes", type=int, default=1, help="load-generating processes")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the status topic")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="Kafka to use"
    )
    return loop.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
