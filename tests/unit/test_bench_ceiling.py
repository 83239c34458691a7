"""Ceiling K is a Kafka loop configured like the service: it must follow the service's defaults."""

from __future__ import annotations

from bench import ceiling_kafka
from schemas.config import KafkaSettings


def test_ceiling_k_fetches_and_batches_as_the_service_does_by_default():
    defaults = {name: field.default for name, field in KafkaSettings.model_fields.items()}
    assert ceiling_kafka.MAX_PARTITION_FETCH_BYTES == defaults["max_partition_fetch_bytes"]
    assert ceiling_kafka.STATUS_MAX_BATCH_BYTES == defaults["status_max_batch_bytes"]
    assert ceiling_kafka.STATUS_LINGER_MS == defaults["status_linger_ms"]
