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
