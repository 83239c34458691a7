"""A local SMS provider for the demo, tests and benchmarks: an aiohttp app with two endpoints.

- `POST /v1/batch`: JSON `{"sender": ..., "messages": [{"to": ..., "text": ..., "ref": ...}, ...]}` ->
  `200 {"batch": "<id>", "results": [{"id": "<id>", "to": ..., "status": "accepted"}, ...]}` (by position).
- `POST /v1/sms`: form `to`, `text`, `ref` -> `201 {"id": "<id>", "status": "queued"}`.

Both check an `X-Api-Key` header when the app has a key, answer `401` without it and `400` for malformed
input. Faults (latency, a share of 500 answers) can be switched on for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class Faults:
    """Faults the provider injects."""

    latency_s: float = 0.0
    error_rate: float = 0.0
    status_on_error: int = 500


@dataclass
class Received:
    """What the provider has received, for assertions."""

    requests: int = 0
    messages: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    keep_refs: bool = True


class DemoProvider:
    """The provider's state and handlers."""

    def __init__(self, api_key: str | None = None, faults: Faults | None = None, seed: int = 0) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.received = Received()
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/batch", self.batch)
        app.router.add_post("/v1/sms", self.single)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _gate(self, request: web.Request) -> web.Response | None:
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        if self.api_key is not None and request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            return web.json_response({"error": "temporarily unavailable"}, status=self.faults.status_on_error)
        return None

    async def batch(self, request: web.Request) -> web.Response:
        refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        try:
            doc = orjson.loads(await request.read())
            messages = doc["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty array")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"malformed request: {exc}"}, status=400)
        results = []
        for item in messages:
            to = item.get("to") if isinstance(item, dict) else None
            if not isinstance(to, str) or not E164.match(to):
                results.append({"to": to, "status": "rejected", "error": "invalid number"})
                continue
            results.append({"id": f"demo-{next(self._ids)}", "to": to, "status": "accepted"})
        self._count(len(messages), [m.get("ref") for m in messages if isinstance(m, dict)])
        return web.Response(
            body=orjson.dumps({"batch": f"b-{next(self._ids)}", "results": results}),
            content_type="application/json",
        )

    async def single(self, request: web.Request) -> web.Response:
        refusal = await self._gate(request)
        if refusal is not None:
            return refusal
        form = await request.post()
        to, text = form.get("to"), form.get("text")
        if not isinstance(to, str) or not E164.match(to) or not isinstance(text, str):
            return web.json_response({"error": "to and text are required"}, status=400)
        ref = form.get("ref")
        self._count(1, [ref if isinstance(ref, str) else None])
        return web.json_response({"id": f"demo-{next(self._ids)}", "status": "queued"}, status=201)

    def _count(self, count: int, refs: list[Any]) -> None:
        received = self.received
        received.requests += 1
        received.messages += count
        received.batch_sizes.append(count)
        if received.keep_refs:
            received.refs.extend(str(r) for r in refs if r is not None)


async def serve(provider: DemoProvider, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the provider; returns the runner (call `cleanup()` to stop) and the bound port."""
    runner = web.AppRunner(provider.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


def main(argv: list[str] | None = None) -> int:
    """`sms-consumer demo-provider`: run the demo provider until interrupted."""
    parser = argparse.ArgumentParser(prog="sms-consumer demo-provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default=None, help="require this X-Api-Key header")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with 500")
    args = parser.parse_args(argv)
    provider = DemoProvider(args.api_key, Faults(args.latency_ms / 1000, args.error_rate))
    provider.received.keep_refs = False
    print(f"demo provider listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(provider.app(), host=args.host, port=args.port, access_log=None, print=None)
    return 0
