import pytest

from consumer.config import interpolate, load_config, parse_config
from consumer.errors import ConfigError

PROVIDER = {
    "method": "POST",
    "url": "https://sms.example/send",
    "format": "json",
    "payload": {"to": "$$To", "text": "$$Body"},
}


def test_minimal_config_takes_documented_defaults():
    config = parse_config({"providers": {"p": PROVIDER}}, env={})
    assert config.kafka.input_topic == "sms.send-requests"
    assert config.kafka.status_topic == "sms.delivery-status"
    assert config.kafka.dlq_topic == "sms.send-requests.dlq"
    assert config.pipeline.linger_ms == 100


def test_env_interpolation_and_defaults():
    tree, problems = interpolate({"a": "${X}", "b": ["${Y:-dflt}"], "c": "pre-${X}-post"}, {"X": "1"})
    assert tree == {"a": "1", "b": ["dflt"], "c": "pre-1-post"} and problems == []
    _, problems = interpolate({"auth": {"password": "${MISSING}"}}, {})
    assert problems == ["auth.password: environment variable MISSING is not set"]


def test_environment_overrides_kafka_settings():
    config = parse_config(
        {"kafka": {"bootstrap_servers": "file:9092", "group_id": "g"}, "providers": {"p": PROVIDER}},
        env={"SMS_KAFKA_BOOTSTRAP_SERVERS": "env:9092"},
    )
    assert config.kafka.bootstrap_servers == "env:9092" and config.kafka.group_id == "g"


def test_bad_config_lists_every_problem_with_its_path():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "kafka": {"linger": 5},
                "pipeline": {"linger_ms": -1},
                "providers": {
                    "a": {"method": "POST", "url": "ftp://x", "format": "json", "payload": {"to": "$$To"}},
                    "b": {
                        "method": "POST",
                        "url": "https://x",
                        "format": "json",
                        "payload": {},
                        "batch": {"key": "m", "size": 5000},
                    },
                },
            },
            env={},
        )
    problems = err.value.problems
    assert any(p.startswith("kafka.linger:") for p in problems)
    assert any(p.startswith("pipeline.linger_ms:") for p in problems)
    assert any(p.startswith("providers.a.url:") and "http" in p for p in problems)
    assert any(p.startswith("providers.b.batch.size:") and "1000" in p for p in problems)


def test_secrets_are_not_echoed_in_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  p:\n    url: https://x\n    format: json\n    payload: {to: $$To}\n"
        "    auth: {type: basic, username: u, password: {nested: s3cr3t-value}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "s3cr3t-value" not in str(err.value)
    assert "providers.p.auth.basic.password" in str(err.value) or "providers.p.auth.password" in str(err.value)


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "line" in err.value.problems[0]


def test_get_provider_rejects_a_body():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"providers": {"g": {"method": "GET", "url": "https://x", "format": "json", "payload": {}}}}, env={}
        )
    assert err.value.problems[0].startswith("providers.g:")
