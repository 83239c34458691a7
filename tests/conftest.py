"""Shared fixtures: a real Kafka broker for the whole test session.

Set ``KAFKA_BOOTSTRAP_SERVERS`` to run the Kafka tests against an existing cluster;
otherwise a one-broker cluster is started locally (Java and Maven are required, see
``consumer.devbroker``).  Tests that need Kafka are marked ``kafka`` automatically when
they use the ``kafka_bootstrap`` fixture, so ``-m "not kafka"`` skips them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import pytest
from aiohttp import web

from consumer.devbroker import KafkaCluster
from consumer.testing import create_topics as create_kafka_topics
from tests.support import start_app

TopicNames = Callable[..., str]
"""``topic_names(prefix="t") -> str``: a topic name unique across test runs."""

CreateTopics = Callable[[str, Mapping[str, int]], Awaitable[None]]
"""``await create_topics(bootstrap, {name: partitions})``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the Kafka broker with ``kafka``."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a Kafka cluster shared by the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with KafkaCluster(brokers=1) as cluster:
        yield cluster.bootstrap_servers


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    """Factory of unique topic names, so tests can share one cluster."""
    test_name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name)[:40].strip("-")

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test_name}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
async def create_topics() -> CreateTopics:
    """``await create_topics(bootstrap, {name: partitions})`` creates the topics."""
    return create_kafka_topics


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """`await http_server(app)` serves an aiohttp app on a free loopback port and returns its base URL;
    every server is stopped when the test ends."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, base = await start_app(app)
        runners.append(runner)
        return base

    yield start
    for runner in runners:
        await runner.cleanup()
