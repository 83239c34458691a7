"""Building blocks the tests share: service configuration sections and loopback HTTP servers."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

FAST_PIPELINE: dict[str, Any] = {"linger_ms": 20, "commit_interval_ms": 100, "shutdown_timeout_s": 10}
"""Short linger and commit interval, so tests see results quickly."""

LOOPBACK_OPS: dict[str, Any] = {"http_port": 0, "http_host": "127.0.0.1"}
"""The operations server on any free loopback port."""


def kafka_section(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A `kafka:` section with topics and a group of their own, so tests can share one cluster."""
    run = uuid.uuid4().hex[:10]
    section: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": f"g-{run}",
        "input_topic": f"in-{run}",
        "status_topic": f"status-{run}",
        "dlq_topic": f"dlq-{run}",
        "session_timeout_ms": 10000,
        "rebalance_timeout_ms": 10000,
    }
    section.update(extra)
    return section


def batch_provider(url: str, size: int = 100, **extra: Any) -> dict[str, Any]:
    """The JSON batch provider most tests use: `{"campaign", "messages": [{"to", "text", "ref"}]}`, answered
    with `{"results": [{"id"}...]}` by position."""
    provider: dict[str, Any] = {
        "url": url,
        "format": "json",
        "payload": {"campaign": "$$CampaignID", "messages": [{"to": "$$To", "text": "$$Body", "ref": "$$MessageID"}]},
        "batch": {"key": "messages", "size": size},
        "response": {"records": "/results", "record_message_id": "/id"},
    }
    provider.update(extra)
    return provider


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free loopback port; returns the runner (call `cleanup()`) and `http://127.0.0.1:PORT`."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
