"""Prometheus metrics of one service instance, on a registry of its own (no global state).

Counters move per batch (`inc(n)`), not per message, to keep the hot path cheap.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Every metric the service exposes on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.consumed = Counter("sms_messages_consumed", "Send-request records read from Kafka.", registry=r)
        self.statuses = Counter(
            "sms_statuses", "Statuses published, by provider and status.", ["provider", "status"], registry=r
        )
        self.dead_letters = Counter(
            "sms_dead_letters", "Records written to the dead-letter topic.", ["code"], registry=r
        )
        self.batch_size = Histogram(
            "sms_batch_size", "Messages per provider request.", ["provider"], buckets=BATCH_BUCKETS, registry=r
        )
        self.http_latency = Histogram(
            "sms_http_request_duration_seconds",
            "Duration of one HTTP attempt to a provider.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_responses = Counter(
            "sms_http_responses",
            "Provider answers by HTTP status (or `timeout` / `connection_error`).",
            ["provider", "code"],
            registry=r,
        )
        self.retries = Counter("sms_http_retries", "HTTP attempts that were retried.", ["provider"], registry=r)
        self.breaker_state = Gauge(
            "sms_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.",
            ["provider"],
            registry=r,
        )
        self.breaker_opened = Counter("sms_breaker_opened", "Times the breaker opened.", ["provider"], registry=r)
        self.oauth_token_refreshes = Counter(
            "sms_oauth_token_refreshes",
            "OAuth 2.0 token requests, by provider and result (`ok` / `failed`).",
            ["provider", "result"],
            registry=r,
        )
        self.in_flight = Gauge("sms_in_flight_messages", "Messages being sent or published.", registry=r)
        self.buffered = Gauge("sms_buffered_messages", "Messages waiting in open batches.", registry=r)
        self.paused = Gauge("sms_fetch_paused", "1 while fetching is paused by backpressure.", registry=r)
        self.lag = Gauge("sms_consumer_lag", "Records behind the end of each partition.", ["partition"], registry=r)
        self.commit_latency = Histogram(
            "sms_commit_duration_seconds", "Duration of an offset commit.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.commit_failures = Counter("sms_commit_failures", "Offset commits that failed.", registry=r)
        self.loop_lag = Gauge(
            "sms_event_loop_lag_seconds", "How late the event loop ran a timer, last check.", registry=r
        )
        self.callbacks = Counter(
            "sms_callbacks",
            "Delivery reports by provider and result: `published`, `uncorrelated` (published without our message "
            "id), `duplicate`, `ignored` (an unmapped status), `unauthorized`, `malformed` (those two per "
            "callback) and `publish_failed`.",
            ["provider", "result"],
            registry=r,
        )
        self.status_publish_failures = Counter(
            "sms_status_publish_failures", "Attempts to publish statuses that failed (and were retried).", registry=r
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
