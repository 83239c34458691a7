"""Kafka security: the real service runs end to end over SASL_PLAINTEXT with SCRAM users and over SASL_SSL with
a client certificate; wrong credentials or an untrusted broker stop it with an error that says so (and never
shows the password)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.app import Service
from consumer.config import parse_config
from consumer.devbroker import KafkaCluster, TlsFiles
from consumer.kafka_client import KafkaConnectError, connection_failure, connection_kwargs
from consumer.observability import config_secrets
from consumer.testing import capture_logs, collect, create_topics, produce
from schemas.config import KafkaSettings
from tests.e2e.test_pipeline import event, provider  # noqa: F401
from tests.pki import CLIENT_KEY_PASSWORD, make_pki
from tests.support import FAST_PIPELINE, batch_provider, kafka_section

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
        reason="starts brokers of its own with SASL and TLS listeners; runs when the harness starts the brokers",
    ),
]

USER, PASSWORD = "sms-svc", "Sup3r.s3cret~pw"


@pytest.fixture(scope="module")
def sasl_cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(brokers=1, sasl_users={USER: PASSWORD, "reader": "r3ader-pw"}) as cluster:
        yield cluster


def sasl_config(cluster: KafkaCluster, url: str, *, mechanism: str = "SCRAM-SHA-512", password: str = PASSWORD) -> Any:
    return parse_config(
        {
            "kafka": kafka_section(
                cluster.secure_bootstrap_servers,
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=mechanism,
                sasl_username=USER,
                sasl_password="${KAFKA_PASSWORD}",
            ),
            "pipeline": FAST_PIPELINE,
            "observability": {"http_enabled": False},
            "providers": {"batcher": batch_provider(url, 50)},
        },
        env={"KAFKA_PASSWORD": password},
    )


async def test_service_sends_and_publishes_statuses_over_sasl_scram_sha_512(sasl_cluster, provider):  # noqa: F811
    config = sasl_config(sasl_cluster, provider.url)
    kafka = config.kafka
    connection = connection_kwargs(kafka)
    bootstrap = kafka.bootstrap_servers
    with capture_logs(config_secrets(config), level="info") as logs:
        await create_topics(
            bootstrap, {kafka.input_topic: 3, kafka.status_topic: 1, kafka.dlq_topic: 1}, connection=connection
        )
        service = Service(config)
        task = asyncio.create_task(service.run())
        n = 300
        await produce(bootstrap, kafka.input_topic, [event(i, f"c{i % 3}") for i in range(n)], connection=connection)
        statuses = await collect(bootstrap, kafka.status_topic, n, timeout=60, connection=connection)
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert len(statuses) == n
    assert {s["status"] for s in statuses} == {"sent"}
    assert {s["message_id"] for s in statuses} == {f"m-{i}" for i in range(n)}
    assert sum(len(r["messages"]) for r in provider.requests) == n
    text = logs.getvalue()
    assert '"service started"' in text and PASSWORD not in text


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_clients_connect_with_scram_sha_256_and_plain(sasl_cluster, topic_names, mechanism):
    settings = KafkaSettings(
        bootstrap_servers=sasl_cluster.secure_bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="reader",
        sasl_password="r3ader-pw",
    )
    connection = connection_kwargs(settings)
    topic = topic_names("sasl")
    bootstrap = settings.bootstrap_servers
    await create_topics(bootstrap, {topic: 1}, connection=connection)
    assert await produce(bootstrap, topic, [{"n": i} for i in range(5)], connection=connection) == 5
    assert await collect(bootstrap, topic, 5, timeout=20, connection=connection) == [{"n": i} for i in range(5)]


async def test_wrong_password_stops_the_service_with_an_authentication_error(sasl_cluster):
    config = sasl_config(sasl_cluster, "http://127.0.0.1:9/send", password="not-the-Password-1")
    with capture_logs(config_secrets(config), level="info") as logs:
        service = Service(config)
        with pytest.raises(KafkaConnectError) as caught:
            await asyncio.wait_for(service.run(), 60)
    error = caught.value
    assert error.code == "kafka_auth_failed"
    assert "authentication failed" in error.message
    assert f"SCRAM-SHA-512 as '{USER}'" in error.message and sasl_cluster.secure_bootstrap_servers in error.message
    assert "not-the-Password-1" not in error.message
    text = logs.getvalue()
    assert '"kafka connection failed"' in text and "not-the-Password-1" not in text


async def test_a_protocol_that_does_not_match_the_listener_is_named(sasl_cluster):
    sasl = sasl_config(sasl_cluster, "http://127.0.0.1:9/send").kafka
    on_plain_listener = sasl.model_copy(update={"bootstrap_servers": sasl_cluster.bootstrap_servers})
    error = await connection_failure(on_plain_listener, RuntimeError("start failed"))
    assert error.code == "kafka_auth_failed" and "does not expect SASL" in error.message

    plain_on_sasl_listener = KafkaSettings(bootstrap_servers=sasl_cluster.secure_bootstrap_servers)
    error = await connection_failure(plain_on_sasl_listener, RuntimeError("start failed"))
    assert error.code == "kafka_unavailable" and "check security_protocol" in error.message


def test_the_command_line_prints_the_reason_and_exits_2(sasl_cluster, tmp_path: Path):
    doc = {
        "kafka": {
            "bootstrap_servers": sasl_cluster.secure_bootstrap_servers,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password_file": str(tmp_path / "kafka-password"),
        },
        "observability": {"http_enabled": False, "log_format": "json"},
        "providers": {
            "p": {"url": "http://127.0.0.1:9/send", "format": "form", "payload": {"to": "$$To", "text": "$$Body"}}
        },
    }
    (tmp_path / "kafka-password").write_text("wrong-Password-2\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMS_")},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "error: cannot connect to Kafka" in result.stderr and "authentication failed" in result.stderr
    assert "wrong-Password-2" not in result.stderr + result.stdout


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaCluster, dict[str, Path]]]:
    """A broker whose client listener speaks SASL_SSL and wants a client certificate signed by its CA."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls = TlsFiles(keystore=pki["server.pem"], truststore=pki["ca.pem"], client_auth=True)
    with KafkaCluster(brokers=1, sasl_users={USER: PASSWORD}, tls=tls) as cluster:
        assert cluster.secure_protocol == "SASL_SSL"
        yield cluster, pki


def tls_options(cluster: KafkaCluster, pki: dict[str, Path]) -> dict[str, Any]:
    return {
        "bootstrap_servers": cluster.secure_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password": PASSWORD,
        "ssl_cafile": str(pki["ca.pem"]),
        "ssl_certfile": str(pki["client.pem"]),
        "ssl_keyfile": str(pki["client.key"]),
        "ssl_key_password": CLIENT_KEY_PASSWORD,
    }


async def test_service_runs_over_sasl_ssl_with_a_client_certificate(tls_cluster, provider):  # noqa: F811
    cluster, pki = tls_cluster
    config = sasl_config(cluster, provider.url)
    config = config.model_copy(
        update={"kafka": KafkaSettings(**{**_kafka_options(config), **tls_options(cluster, pki)})}
    )
    kafka = config.kafka
    connection = connection_kwargs(kafka)
    bootstrap = kafka.bootstrap_servers
    await create_topics(
        bootstrap, {kafka.input_topic: 2, kafka.status_topic: 1, kafka.dlq_topic: 1}, connection=connection
    )
    service = Service(config)
    task = asyncio.create_task(service.run())
    try:
        await produce(bootstrap, kafka.input_topic, [event(i, "tls") for i in range(50)], connection=connection)
        statuses = await collect(bootstrap, kafka.status_topic, 50, timeout=60, connection=connection)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert sorted(s["message_id"] for s in statuses) == sorted(f"m-{i}" for i in range(50))
    assert {s["status"] for s in statuses} == {"sent"}


async def test_a_broker_certificate_from_another_ca_is_refused_and_named(tls_cluster, tmp_path):
    cluster, pki = tls_cluster
    other = make_pki(tmp_path / "other", ca_name="other-ca")
    settings = KafkaSettings(**{**tls_options(cluster, pki), "ssl_cafile": str(other["ca.pem"])})
    error = await connection_failure(settings, RuntimeError("start failed"))
    assert error.code == "kafka_unavailable" and "broker certificate not trusted" in error.message


async def test_a_missing_client_certificate_is_pointed_out(tls_cluster):
    cluster, pki = tls_cluster
    options = {k: v for k, v in tls_options(cluster, pki).items() if not k.startswith(("ssl_certfile", "ssl_key"))}
    error = await connection_failure(KafkaSettings(**options), RuntimeError("start failed"))
    assert "give ssl_certfile if the broker wants a client certificate" in error.message


def _kafka_options(config: Any) -> dict[str, Any]:
    """The `kafka` section of a config as constructor options (secrets revealed)."""
    options = config.kafka.model_dump(exclude_none=True)
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in options.items()}
