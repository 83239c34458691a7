"""`sms-consumer demo`: the whole job on an embedded default.

Starts a local Apache Kafka broker (unless `--bootstrap` names one), the bundled demo provider, produces a
sample campaign (including a few invalid events), runs the service until every message has its status, and
prints a summary of the statuses it published.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import yaml

from consumer import loop
from consumer.app import Service
from consumer.config import parse_config
from consumer.demo_provider import DemoProvider, serve
from consumer.observability import configure_logging
from consumer.testing import collect, create_topics, produce
from schemas.config import ServiceConfig


def sample_events(count: int, run: str) -> tuple[list[Any], int]:
    """`count` valid send-requests over three campaigns and two providers, plus invalid ones.

    Returns the events and how many of them produce a status (all but those without a readable message id).
    """
    events: list[Any] = []
    campaigns = [("spring-sale", "demo-batch"), ("otp", "demo-single"), ("reminders", "demo-batch")]
    for i in range(count):
        campaign, provider = campaigns[i % len(campaigns)]
        events.append(
            {
                "message_id": f"{run}-{i}",
                "campaign_id": f"{campaign}-{run}",
                "provider": provider,
                "to": f"+1415555{i % 10000:04d}",
                "body": f"Hello #{i}: ünïcödé and emoji 🎉 are fine",
                "metadata": {"customer": i},
            }
        )
    events += [
        b"{not json",
        {"message_id": f"{run}-bad-1", "campaign_id": "x", "provider": "demo-batch", "body": "no recipient"},
        {"message_id": f"{run}-bad-2", "campaign_id": "x", "provider": "nope", "to": "+14155550000", "body": "hi"},
        {
            "message_id": f"{run}-late",
            "campaign_id": "x",
            "provider": "demo-batch",
            "to": "+14155550001",
            "body": "too late",
            "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        },
    ]
    return events, count + 3


def demo_config(bootstrap: str, provider_url: str, run: str) -> ServiceConfig:
    raw = yaml.safe_load(resources.files("consumer").joinpath("data/demo.yaml").read_text(encoding="utf-8"))
    env = {"SMS_DEMO_BOOTSTRAP": bootstrap, "SMS_DEMO_PROVIDER_URL": provider_url, "SMS_DEMO_API_KEY": "demo-key"}
    raw["kafka"].update(
        group_id=f"sms-consumer-demo-{run}",
        input_topic=f"sms.send-requests.demo-{run}",
        status_topic=f"sms.delivery-status.demo-{run}",
        dlq_topic=f"sms.send-requests.dlq.demo-{run}",
    )
    return parse_config(raw, "demo.yaml", env)


async def run_demo(bootstrap: str, count: int, timeout: float = 120.0) -> dict[str, Any]:
    """Run the demo against `bootstrap`; returns the summary."""
    run = uuid.uuid4().hex[:8]
    provider = DemoProvider(api_key="demo-key")
    runner, port = await serve(provider)
    try:
        config = demo_config(bootstrap, f"http://127.0.0.1:{port}", run)
        kafka = config.kafka
        await create_topics(bootstrap, {kafka.input_topic: 3, kafka.status_topic: 3, kafka.dlq_topic: 1})
        events, expected = sample_events(count, run)
        started = time.monotonic()
        await produce(bootstrap, kafka.input_topic, events)
        service = Service(config)
        task = asyncio.create_task(service.run())
        statuses = await collect(bootstrap, kafka.status_topic, expected, timeout)
        elapsed = time.monotonic() - started
        service.request_stop()
        await task
        dead = await collect(bootstrap, kafka.dlq_topic, 3, 10.0)
        return {
            "produced": len(events),
            "statuses": len(statuses),
            "expected_statuses": expected,
            "by_status": Counter(s["status"] for s in statuses),
            "by_provider": Counter((s["provider"], s["status"]) for s in statuses),
            "dead_letters": len(dead),
            "provider_requests": provider.received.requests,
            "provider_messages": provider.received.messages,
            "largest_batch": max(provider.received.batch_sizes, default=0),
            "seconds": elapsed,
            "topics": (kafka.input_topic, kafka.status_topic, kafka.dlq_topic),
        }
    finally:
        await runner.cleanup()


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(
        f"produced {summary['produced']} events; {summary['statuses']} statuses published "
        f"(expected {summary['expected_statuses']}) in {summary['seconds']:.1f} s"
    )
    print("topics: " + ", ".join(summary["topics"]))
    print()
    print(f"{'status':<16}{'count':>8}")
    for status, n in sorted(summary["by_status"].items()):
        print(f"{status:<16}{n:>8}")
    print()
    print(f"{'provider':<16}{'status':<16}{'count':>8}")
    for (prov, status), n in sorted(summary["by_provider"].items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        print(f"{prov or '-':<16}{status:<16}{n:>8}")
    print()
    print(
        f"demo provider: {summary['provider_requests']} requests carried {summary['provider_messages']} "
        f"messages (largest batch {summary['largest_batch']}); {summary['dead_letters']} dead letters"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sms-consumer demo", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000, help="valid send-requests to produce")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka cluster instead of a local broker")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level, fmt="console")
    cluster = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from consumer.devbroker import KafkaCluster

        print("starting a local Apache Kafka broker (the first run fetches it from Maven Central)...", flush=True)
        cluster = KafkaCluster(brokers=1)
        cluster.start()
        bootstrap = cluster.bootstrap_servers
        print(f"broker ready at {bootstrap}", flush=True)
    try:
        summary = loop.run(run_demo(bootstrap, args.messages))
    finally:
        if cluster is not None:
            cluster.stop()
    print_summary(summary)
    return 0 if summary["statuses"] >= summary["expected_statuses"] else 1
