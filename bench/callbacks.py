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
from typing import Any

from consumer.app import Service
from consumer.config import parse_config
from consumer.testing import collect, create_topics, wait_for
from tests.support import kafka_section

TOKEN = "bench-callback-token"


def _fire(url: str, rate: float, seconds: float, concurrency: int, first: int, step: int, out: Any) -> None:
    """A load generator (a child process): `rate` callbacks per second on a fixed schedule, ids `first`,
    `first + step`, ..."""
    import aiohttp

    async def run() -> None:
        total = int(rate * seconds)
        latencies: list[float] = []
        failures: dict[int, int] = {}
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(i: int) -> None:
                sid = f"SMbench{first + i * step:09d}"
                body = {"MessageSid": sid, "To": "+14155550100", "MessageStatus": "delivered"}
                start = time.perf_counter()
                try:
                    async with http.post(url, data=body, params={"token": TOKEN}) as response:
                        await response.read()
                        code = response.status
                except aiohttp.ClientError:
                    code = 0
                finally:
                    gate.release()
                if code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures[code] = failures.get(code, 0) + 1

            tasks = []
            began = time.perf_counter()
            for i in range(total):
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - began
        out.send({"total": total, "ok": len(latencies), "failures": failures, "elapsed": elapsed, "lat": latencies})

    asyncio.run(run())


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
    parser.add_argument("--concurrency", type=int, default=256, help="callbacks in flight at most")
    parser.add_argument("--processes", type=int, default=3, help="load-generating processes")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the status topic")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="Kafka to use"
    )
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
