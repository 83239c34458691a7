from schemas.generate import generated, main


def test_generated_json_schemas_are_up_to_date():
    stale = [path.name for path, text in generated().items() if not path.exists() or path.read_text() != text]
    assert stale == [], "run `python -m schemas.generate` and commit the result"
    assert main(["--check"]) == 0


def test_schemas_name_the_required_fields():
    import json

    texts = {path.name: json.loads(text) for path, text in generated().items() if path.suffix == ".json"}
    assert set(texts["send-request.schema.json"]["required"]) == {"message_id", "campaign_id", "provider", "to"}
    status = texts["delivery-status.schema.json"]
    assert {"message_id", "status", "completed_at", "source"} <= set(status["required"])
    assert set(status["$defs"]["Status"]["enum"]) >= {"sent", "failed", "rejected", "dispatch_error", "expired"}


def test_every_option_appears_in_the_configuration_reference():
    from schemas.generate import REFERENCE, SECTIONS

    text = generated()[REFERENCE]
    for section, model in SECTIONS:
        assert f"## `{section}`" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{section}.{name} missing from the reference"


def test_the_config_schema_takes_a_provider_given_as_a_preset_and_what_it_changes():
    import json

    import yaml
    from jsonschema import Draft202012Validator

    from consumer.config import parse_config
    from schemas.generate import JSON_DIR

    schema = json.loads(generated()[JSON_DIR / "service-config.schema.json"])
    validator = Draft202012Validator(schema)
    twilio = {
        "preset": "twilio",
        "payload": {"StatusCallback": "https://hooks.example.com/callbacks/twilio"},
        "callback": {
            "auth": {"type": "twilio_signature", "auth_token": "t0ken", "public_url": "https://hooks.example.com"}
        },
        "retry": {"max_attempts": 6},
    }
    config = {"providers": {"twilio": twilio}}
    assert [e.message for e in validator.iter_errors(config)] == []
    # What the schema takes, the service takes.
    env = {"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "t"}
    assert parse_config(config, env=env).providers["twilio"].callback.auth.type == "twilio_signature"
    # Without a preset the entry is whole: it needs its URL, and nested sections their required fields.
    errors = [e.message for e in validator.iter_errors({"providers": {"acme": {"format": "json"}}})]
    assert any("'url' is a required property" in m for m in errors)
    partial_callback = {"url": "https://x.example", "callback": {"auth": {"type": "none"}}}
    assert list(validator.iter_errors({"providers": {"acme": partial_callback}}))
    # The authentication given over a preset is taken whole, so it is checked whole.
    broken_auth = {**twilio, "callback": {"auth": {"type": "twilio_signature", "auth_token": "t0ken"}}}
    assert list(validator.iter_errors({"providers": {"twilio": broken_auth}}))
    # The shipped example file passes.
    example = yaml.safe_load((JSON_DIR.parents[1] / "examples" / "config.yaml").read_text())
    assert [e.message for e in validator.iter_errors(example)] == []
