import re

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


# -- presets ---------------------------------------------------------------------------------------------------

PRESET_ENV = {"PLIVO_AUTH_ID": "MAXXXX", "PLIVO_AUTH_TOKEN": "tok-secret"}


def test_every_shipped_preset_is_a_valid_provider():
    from consumer.config import known_presets, load_preset
    from consumer.templates import compile_providers

    names = known_presets()
    assert set(names) >= {
        "bulksms",
        "exotel",
        "msg91",
        "nimbus",
        "plivo",
        "smsindiahub",
        "textlocal",
        "pinpoint",
        "mitto",
        "twilio",
        "sinch",
    }
    env: dict[str, str] = {}
    for name in names:
        text = str(load_preset(name))
        env.update({var: "x" for var in re.findall(r"\$\{([A-Z0-9_]+)\}", text)})
    config = parse_config({"providers": {n: {"preset": n} for n in names}}, env=env)
    providers = compile_providers(config.providers)
    assert {p.config.preset for p in providers.values()} == set(names)


def test_a_preset_is_merged_under_the_users_values():
    config = parse_config(
        {
            "providers": {
                "mine": {
                    "preset": "plivo",
                    "payload": {"url": "https://me.example/dlr", "type": None},
                    "batch": {"size": 50},
                    "concurrency": 4,
                }
            }
        },
        env=PRESET_ENV,
    )
    p = config.providers["mine"]
    assert p.url == "https://api.plivo.com/v1/Account/MAXXXX/Message/"
    assert p.payload == {"src": "$$sender", "dst": "$$To", "text": "$$Body", "url": "https://me.example/dlr"}
    assert p.batch is not None and (p.batch.mode, p.batch.key, p.batch.separator, p.batch.size) == (
        "joined",
        "dst",
        "<",
        50,
    )
    assert p.concurrency == 4 and p.preset == "plivo"
    assert p.auth.type == "basic" and p.auth.username == "MAXXXX"  # type: ignore[union-attr]


def test_the_users_auth_replaces_the_presets_whole():
    config = parse_config(
        {"providers": {"mine": {"preset": "plivo", "auth": {"type": "none"}}}}, env={"PLIVO_AUTH_ID": "MA1"}
    )
    assert config.providers["mine"].auth.type == "none"


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mine": {"preset": "nope", "url": "https://x"}}}, env={})
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.startswith("providers.mine.preset: unknown preset 'nope' (known: bulksms, exotel,")
    for path in ("../config", "PLIVO", ""):
        with pytest.raises(ConfigError):
            parse_config({"providers": {"mine": {"preset": path}}}, env={})


def test_a_presets_missing_environment_variable_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mine": {"preset": "plivo"}}}, env={"PLIVO_AUTH_ID": "MA1"})
    assert err.value.problems == ["providers.mine.auth.password: environment variable PLIVO_AUTH_TOKEN is not set"]


def test_merge_patch_follows_rfc_7386():
    from consumer.config import merge_patch

    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}  # the preset is not changed
