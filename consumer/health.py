"""The operations HTTP server: `/healthz`, `/readyz` and `/metrics` (and any routes mounted on it, such as the
delivery-report callbacks), plus the event-loop lag probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from consumer.metrics import CONTENT_TYPE_LATEST, Metrics

Check = Callable[[], tuple[bool, dict[str, Any]]]


class LoopLagProbe:
    """Measures how late the event loop wakes a timer: blocking work on the loop shows up here."""

    def __init__(self, metrics: Metrics | None = None, interval: float = 0.5) -> None:
        self.interval = interval
        self.last = 0.0
        self.last_beat = time.monotonic()
        self._metrics = metrics

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.last = max(0.0, now - start - self.interval)
            self.last_beat = now
            if self._metrics is not None:
                self._metrics.loop_lag.set(self.last)


class OpsServer:
    """An aiohttp server in the service's own process; `routes` are served beside the operations pages."""

    def __init__(
        self,
        metrics: Metrics,
        alive: Check,
        ready: Check,
        host: str,
        port: int,
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self._metrics = metrics
        self._routes = list(routes)
        self._alive = alive
        self._ready = ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._readiness)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_routes(self._routes)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _answer(check: Check) -> web.Response:
        ok, details = check()
        return web.json_response({"ok": ok, **details}, status=200 if ok else 503)

    async def _health(self, request: web.Request) -> web.Response:
        return self._answer(self._alive)

    async def _readiness(self, request: web.Request) -> web.Response:
        return self._answer(self._ready)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
