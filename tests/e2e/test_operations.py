"""Operations on a live service: `/metrics` agrees with the statuses published; `/healthz` and `/readyz`."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.testing import collect, produce, wait_for
from tests.e2e.test_pipeline import event, make_config, provider, start, stop  # noqa: F401

pytestmark = pytest.mark.kafka


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_match_the_published_statuses_and_health_endpoints_answer(kafka_bootstrap, provider):  # noqa: F811
    config = make_config(kafka_bootstrap, provider.url, batch_size=50, linger_ms=20)
    kafka = config.kafka
    service, task = await start(config)
    bad = [b"nope", {"message_id": "x1", "campaign_id": "c", "provider": "ghost", "to": "+14155550100", "body": "b"}]
    await produce(kafka_bootstrap, kafka.input_topic, [*(event(i, "c") for i in range(500)), *bad])
    statuses = await collect(kafka_bootstrap, kafka.status_topic, 501, timeout=60)
    assert len(statuses) == 501
    assert service.ops is not None and service.ops.port
    base = f"http://127.0.0.1:{service.ops.port}"
    async with aiohttp.ClientSession() as http:

        async def scrape():
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                return samples(await r.text())

        async def counted() -> bool:
            m = await scrape()
            return m.get(("sms_statuses_total", (("provider", "batcher"), ("status", "sent")))) == 500

        await wait_for(counted, timeout=10, what="metrics to count every sent status")
        m = await scrape()
        assert m[("sms_statuses_total", (("provider", "ghost"), ("status", "rejected")))] == 1
        assert m[("sms_dead_letters_total", (("code", "invalid_json"),))] == 1
        assert m[("sms_dead_letters_total", (("code", "unknown_provider"),))] == 1
        assert m[("sms_messages_consumed_total", ())] == 502
        assert m[("sms_batch_size_sum", (("provider", "batcher"),))] == 500
        assert m[("sms_http_responses_total", (("code", "200"), ("provider", "batcher")))] == len(provider.requests)
        assert m[("sms_in_flight_messages", ())] == 0 and m[("sms_buffered_messages", ())] == 0
        async with http.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["ok"] is True
        async with http.get(base + "/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["assigned"] and body["producer_connected"]
        service.request_stop()
        await wait_for(lambda: task.done(), timeout=30, what="service to stop")
    await stop(service, task)
