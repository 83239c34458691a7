"""Service configurations of the scenarios: one fake provider, batching or not, against a scenario's topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.workload import Topics

PROVIDER = "bench"


@dataclass(frozen=True, slots=True)
class ProviderShape:
    """How the scenario's provider takes messages."""

    batch_size: int | None
    """Records per request; None: one request per message."""
    concurrency: int
    max_attempts: int = 4

    @property
    def path(self) -> str:
        return "/batch" if self.batch_size else "/single"


def provider_section(shape: ProviderShape, base_url: str) -> dict[str, Any]:
    """The provider as a template, in the form the configuration file takes."""
    section: dict[str, Any] = {
        "method": "POST",
        "url": base_url + shape.path,
        "headers": {"X-Client": "sms-consumer-bench"},
        "format": "json",
        "concurrency": shape.concurrency,
        "timeout_s": 10,
        "retry": {"max_attempts": shape.max_attempts, "backoff_initial_ms": 200, "backoff_max_ms": 5000},
    }
    if shape.batch_size:
        section["payload"] = {
            "sender": "BENCH",
            "campaign": "$$CampaignID",
            "messages": [{"to": "$$To", "text": "$$Body", "ref": "$$MessageID"}],
        }
        section["batch"] = {"key": "messages", "size": shape.batch_size}
        section["response"] = {
            "records": "/results",
            "record_message_id": "/id",
            "record_status": "/status",
            "record_accepted": ["accepted"],
        }
    else:
        section["payload"] = {"to": "$$To", "text": "$$Body", "ref": "$$MessageID"}
        section["response"] = {"message_id": "/id"}
    return section


def service_config(
    *,
    bootstrap: str,
    topics: Topics,
    group: str,
    shape: ProviderShape,
    provider_url: str,
    ops_port: int,
    linger_ms: int = 100,
    max_pending: int | None = None,
) -> dict[str, Any]:
    """The whole configuration file of one scenario."""
    pipeline: dict[str, Any] = {"linger_ms": linger_ms}
    if max_pending is not None:
        pipeline["max_pending_messages"] = max_pending
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "client_id": group,
            "group_id": group,
            "input_topic": topics.input,
            "status_topic": topics.status,
            "dlq_topic": topics.dlq,
        },
        "pipeline": pipeline,
        "observability": {
            "log_level": "warning",
            "log_format": "json",
            "http_host": "127.0.0.1",
            "http_port": ops_port,
        },
        "providers": {PROVIDER: provider_section(shape, provider_url)},
    }
