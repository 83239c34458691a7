"""The service's metric values against `prometheus_client`'s own metrics fed the same operations."""

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from consumer.metrics import LATENCY_BUCKETS, Metrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


values = st.one_of(
    st.sampled_from(LATENCY_BUCKETS),  # exactly on a bound: counted in that bucket (`le`)
    st.floats(min_value=0, max_value=100, allow_nan=False),
)


@given(
    observations=st.lists(st.tuples(st.sampled_from(["a", "b"]), values), max_size=40),
    increments=st.lists(st.tuples(st.sampled_from(["sent", "failed"]), st.integers(0, 1000)), max_size=20),
)
def test_exposition_matches_prometheus_client(observations, increments):
    ours = Metrics()
    registry = prometheus_client.CollectorRegistry()
    latency = prometheus_client.Histogram(
        "sms_http_request_duration_seconds", "x", ["provider"], buckets=LATENCY_BUCKETS, registry=registry
    )
    statuses = prometheus_client.Counter("sms_statuses", "x", ["provider", "status"], registry=registry)
    for provider, value in observations:
        ours.http_latency.labels(provider).observe(value)
        latency.labels(provider).observe(value)
    for status, count in increments:
        ours.statuses.labels("p", status).inc(count)
        statuses.labels("p", status).inc(count)
    theirs = samples(prometheus_client.generate_latest(registry))
    mine = samples(ours.render())
    assert {k: v for k, v in mine.items() if k[0].startswith(("sms_http_request", "sms_statuses"))} == pytest.approx(
        theirs
    )


def test_gauges_read_their_function_at_scrape_time_and_counters_refuse_to_go_down():
    metrics = Metrics()
    level = [3]
    metrics.in_flight.set_function(lambda: level[0])
    metrics.lag.labels("t-0").set(12)
    level[0] = 5
    got = samples(metrics.render())
    assert got[("sms_in_flight_messages", ())] == 5
    assert got[("sms_consumer_lag", (("partition", "t-0"),))] == 12
    with pytest.raises(ValueError):
        metrics.consumed.inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        metrics.statuses.labels("only-one")


def test_each_instance_has_its_own_registry():
    one, two = Metrics(), Metrics()
    one.consumed.inc(4)
    assert one.registry.get_sample_value("sms_messages_consumed_total") == 4
    assert two.registry.get_sample_value("sms_messages_consumed_total") == 0
