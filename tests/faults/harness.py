"""Fault-test helpers: a counting provider and the service run as a real subprocess that can be killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from tests.support import FAST_PIPELINE, LOOPBACK_OPS, batch_provider, kafka_section, start_app


class CountingProvider:
    """A JSON batch provider that counts every send of every message and can fail on demand."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.sends: Counter[str] = Counter()
        self.requests = 0
        self.mode = "ok"  # ok | error | slow | throttle
        self.retry_after = "1"
        self.request_times: list[float] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        self.request_times.append(loop.time())
        self.requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.mode == "error":
            return web.json_response({"error": "down"}, status=503)
        if self.mode == "slow":
            await asyncio.sleep(30)
        if self.mode == "throttle":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": self.retry_after})
        try:
            raw = await request.read()
        except ConnectionResetError:  # the service was killed mid-request
            return web.Response(status=499)
        doc = orjson.loads(raw)
        for message in doc["messages"]:
            self.sends[message["ref"]] += 1
        return web.json_response({"results": [{"id": f"p-{m['ref']}"} for m in doc["messages"]]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/send", self.handle)
        self._runner, base = await start_app(app)
        self.url = base + "/send"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def service_config(bootstrap: str, url: str, **overrides: Any) -> dict[str, Any]:
    """A service configuration for fault tests: small batches, four senders, patient retries, fast member
    failure detection. `overrides` update a section (`provider` updates the provider)."""
    config: dict[str, Any] = {
        "kafka": kafka_section(bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_records=500),
        "pipeline": {**FAST_PIPELINE, "commit_interval_ms": 200, "max_pending_messages": 1000},
        "observability": {**LOOPBACK_OPS, "log_level": "info", "log_format": "json"},
        "providers": {
            "p": batch_provider(
                url,
                20,
                concurrency=4,
                timeout_s=5,
                retry={"max_attempts": 8, "backoff_initial_ms": 50, "backoff_max_ms": 500},
            )
        },
    }
    for section, values in overrides.items():
        if section == "provider":
            config["providers"]["p"].update(values)
        else:
            config[section].update(values)
    return config


class ServiceProcess:
    """`python -m consumer run CONFIG` as a child process."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.path = workdir / "config.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = workdir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_kb = 0

    def start(self) -> None:
        logfile = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", str(self.path)], stdout=logfile, stderr=logfile
        )

    def rss_kb(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    value = int(line.split()[1])
                    self.peak_rss_kb = max(self.peak_rss_kb, value)
                    return value
        except OSError:
            return 0
        return 0

    def kill(self) -> None:
        assert self.proc is not None
        self.rss_kb()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.rss_kb()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
