"""Kafka connection security: settings validation, the one place that builds aiokafka's connection arguments,
and the secrets it adds to the log redactor."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from consumer.app import producer_kwargs
from consumer.config import parse_config
from consumer.errors import ConfigError
from consumer.kafka_client import connection_kwargs, describe
from consumer.observability import config_secrets
from consumer.source import consumer_kwargs
from consumer.testing import capture_logs
from tests.pki import CLIENT_KEY_PASSWORD, make_pki

PROVIDER = {"url": "https://sms.example/send", "format": "json", "payload": {"to": "$$To", "text": "$$Body"}}


def kafka(env: dict[str, str] | None = None, **options: Any) -> Any:
    return parse_config({"kafka": options, "providers": {"p": PROVIDER}}, env=env or {})


def problems(**options: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        kafka(**options)
    return caught.value.problems


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_plaintext_is_the_default_and_adds_only_the_servers():
    settings = kafka(bootstrap_servers="k1:9092,k2:9092").kafka
    assert connection_kwargs(settings) == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_scram_credentials_reach_the_consumer_and_the_status_producer():
    settings = kafka(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password="pw-1"
    ).kafka
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw-1",
    }
    for options in (consumer_kwargs(settings), producer_kwargs(settings)):
        assert expected.items() <= options.items()
    assert describe(settings) == "127.0.0.1:9092 (SASL_PLAINTEXT, SCRAM-SHA-512 as 'svc')"
    assert "pw-1" not in repr(settings)


def test_sasl_needs_a_mechanism_a_user_and_a_password():
    assert problems(security_protocol="SASL_SSL") == [
        "kafka: security_protocol SASL_SSL needs sasl_mechanism, sasl_username, sasl_password"
    ]
    found = problems(security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI", sasl_username="u", sasl_password="p")
    assert found and found[0].startswith("kafka.sasl_mechanism:")


def test_options_of_another_protocol_are_refused_rather_than_ignored(pki):
    assert problems(sasl_username="u", sasl_password="p") == [
        "kafka: sasl_password, sasl_username: apply to security_protocol SASL_PLAINTEXT or SASL_SSL only"
    ]
    assert problems(security_protocol="SASL_PLAINTEXT", ssl_cafile=str(pki["ca.pem"]), **_sasl()) == [
        "kafka: ssl_cafile: apply to security_protocol SSL or SASL_SSL only"
    ]


def test_tls_files_must_exist_and_a_key_needs_its_certificate(tmp_path, pki):
    missing = tmp_path / "nope.pem"
    assert problems(security_protocol="SSL", ssl_cafile=str(missing)) == [
        f"kafka: ssl_cafile: {missing} is not a readable file"
    ]
    assert problems(security_protocol="SSL", ssl_keyfile=str(pki["client.key"])) == [
        "kafka: ssl_keyfile and ssl_key_password need ssl_certfile"
    ]


def test_the_sasl_password_can_come_from_a_file_or_the_environment(tmp_path):
    secret = tmp_path / "kafka-password"
    secret.write_text("from-file\n")
    settings = kafka(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password_file=str(secret)
    ).kafka
    assert settings.sasl_password.get_secret_value() == "from-file"
    settings = kafka(
        {"SMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SMS_KAFKA_SASL_PASSWORD": "from-env"},
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
    ).kafka
    assert settings.security_protocol == "SASL_SSL" and settings.sasl_password.get_secret_value() == "from-env"
    both = problems(security_protocol="SASL_SSL", **_sasl(), sasl_password_file=str(secret))
    assert both == ["kafka: give `sasl_password` or `sasl_password_file`, not both"]


def test_mutual_tls_builds_a_verifying_context_from_the_pem_files(pki):
    settings = kafka(
        security_protocol="SASL_SSL",
        **_sasl(),
        ssl_cafile=str(pki["ca.pem"]),
        ssl_certfile=str(pki["client.pem"]),
        ssl_keyfile=str(pki["client.key"]),
        ssl_key_password=CLIENT_KEY_PASSWORD,
    ).kafka
    options = connection_kwargs(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_plain_password"] == "pw"

    relaxed = kafka(security_protocol="SSL", ssl_cafile=str(pki["ca.pem"]), ssl_check_hostname=False).kafka
    assert connection_kwargs(relaxed)["ssl_context"].check_hostname is False


def test_a_wrong_key_password_is_a_configuration_error_that_hides_the_password(pki):
    settings = kafka(
        security_protocol="SSL",
        ssl_certfile=str(pki["client.pem"]),
        ssl_keyfile=str(pki["client.key"]),
        ssl_key_password="Wrong-key-pw",
    ).kafka
    with pytest.raises(ConfigError) as caught:
        connection_kwargs(settings)
    assert "cannot load the TLS files" in caught.value.message and "client.key" in caught.value.message
    assert "Wrong-key-pw" not in caught.value.message


def test_kafka_passwords_are_masked_in_every_log_line(pki):
    config = kafka(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password="Kafka-pw-123",
        ssl_certfile=str(pki["client.pem"]),
        ssl_keyfile=str(pki["client.key"]),
        ssl_key_password="Key-pw-456",
    )
    assert {"Kafka-pw-123", "Key-pw-456"} <= set(config_secrets(config))
    import structlog

    with capture_logs(config_secrets(config)) as logs:
        structlog.get_logger("t").warning("connect", detail="login Kafka-pw-123 with key Key-pw-456")
    line = logs.getvalue()
    assert "Kafka-pw-123" not in line and "Key-pw-456" not in line and "***" in line


def _sasl() -> dict[str, str]:
    return {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "pw"}
