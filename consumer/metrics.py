"""Prometheus metrics of one service instance, on a registry of its own (no global state).

The values are plain numbers moved by the event loop's thread, without the lock `prometheus_client`'s own
metrics take on every change (several per message on the send path); they are turned into metric families
only when `/metrics` is scraped, which runs on the same thread. Counters move per batch (`inc(n)`), not per
message, where a batch is at hand.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class CounterValue:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class GaugeValue:
    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from `function` at each scrape instead."""
        self.function = function

    def get(self) -> float:
        return float(self.function()) if self.function is not None else self.value


class HistogramValue:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ends with +Inf
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are `le` (less than or equal).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    """A metric with labels (children by label values) or without (the family is its own one child)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Any] = {}
        if not labelnames:
            self._only = self.children[()] = self._child()

    def _child(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        """The child for these label values (made on first use): one dict lookup once it exists."""
        child = self.children.get(values)
        if child is not None:
            return child
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._child()
        return child

    def family(self) -> Metric:
        raise NotImplementedError


class Counter(_Family):
    def _child(self) -> CounterValue:
        return CounterValue()

    def inc(self, amount: float = 1) -> None:
        self._only.inc(amount)

    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            out.add_metric(key, child.value)
        return out


class Gauge(_Family):
    def _child(self) -> GaugeValue:
        return GaugeValue()

    def set(self, value: float) -> None:
        self._only.set(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self._only.set_function(function)

    def family(self) -> Metric:
        out = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            out.add_metric(key, child.get())
        return out


class Histogram(_Family):
    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...] = (), *, buckets: tuple[float, ...]
    ) -> None:
        self.bounds = (*(float(b) for b in buckets), math.inf)
        self._le = [floatToGoString(b) for b in self.bounds]
        super().__init__(name, documentation, labelnames)

    def _child(self) -> HistogramValue:
        return HistogramValue(self.bounds)

    def observe(self, value: float) -> None:
        self._only.observe(value)

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            cumulative, buckets = 0, []
            for le, count in zip(self._le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            out.add_metric(key, buckets, child.sum)
        return out


class Metrics:
    """Every metric the service exposes on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.consumed = Counter("sms_messages_consumed", "Send-request records read from Kafka.")
        self.statuses = Counter("sms_statuses", "Statuses published, by provider and status.", ("provider", "status"))
        self.dead_letters = Counter("sms_dead_letters", "Records written to the dead-letter topic.", ("code",))
        self.batch_size = Histogram(
            "sms_batch_size", "Messages per provider request.", ("provider",), buckets=BATCH_BUCKETS
        )
        self.http_latency = Histogram(
            "sms_http_request_duration_seconds",
            "Duration of one HTTP attempt to a provider.",
            ("provider",),
            buckets=LATENCY_BUCKETS,
        )
        self.http_responses = Counter(
            "sms_http_responses",
            "Provider answers by HTTP status (or `timeout` / `connection_error`).",
            ("provider", "code"),
        )
        self.retries = Counter("sms_http_retries", "HTTP attempts that were retried.", ("provider",))
        self.breaker_state = Gauge(
            "sms_breaker_state", "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.", ("provider",)
        )
        self.breaker_opened = Counter("sms_breaker_opened", "Times the breaker opened.", ("provider",))
        self.oauth_token_refreshes = Counter(
            "sms_oauth_token_refreshes",
            "OAuth 2.0 token requests, by provider and result (`ok` / `failed`).",
            ("provider", "result"),
        )
        self.in_flight = Gauge("sms_in_flight_messages", "Messages being sent or published.")
        self.buffered = Gauge("sms_buffered_messages", "Messages waiting in open batches.")
        self.paused = Gauge("sms_fetch_paused", "1 while fetching is paused by backpressure.")
        self.lag = Gauge("sms_consumer_lag", "Records behind the end of each partition.", ("partition",))
        self.commit_latency = Histogram(
            "sms_commit_duration_seconds", "Duration of an offset commit.", buckets=LATENCY_BUCKETS
        )
        self.commit_failures = Counter("sms_commit_failures", "Offset commits that failed.")
        self.loop_lag = Gauge("sms_event_loop_lag_seconds", "How late the event loop ran a timer, last check.")
        self.callbacks = Counter(
            "sms_callbacks",
            "Delivery reports by provider and result: `published`, `uncorrelated` (published without our message "
            "id), `duplicate`, `ignored` (an unmapped status), `unauthorized`, `malformed` (those two per "
            "callback) and `publish_failed`.",
            ("provider", "result"),
        )
        self.status_publish_failures = Counter(
            "sms_status_publish_failures", "Attempts to publish statuses that failed (and were retried)."
        )
        self._families = [m for m in vars(self).values() if isinstance(m, _Family)]
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """The registry's view (a `prometheus_client` collector): every family as it stands."""
        for metric in self._families:
            yield metric.family()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
