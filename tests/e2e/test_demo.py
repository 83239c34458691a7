"""The README's first command: the demo runs the whole job and accounts for every event."""

import pytest

from consumer.demo import run_demo

pytestmark = pytest.mark.kafka


async def test_demo_publishes_a_status_for_every_event_with_a_message_id(kafka_bootstrap):
    summary = await run_demo(kafka_bootstrap, 600, timeout=60)
    assert summary["statuses"] == summary["expected_statuses"] == 603
    assert summary["by_status"] == {"sent": 600, "rejected": 2, "expired": 1}
    assert summary["dead_letters"] == 3
    assert summary["provider_messages"] == 600
    assert 0 < summary["largest_batch"] <= 100
