import orjson
import structlog

from consumer.config import parse_config
from consumer.observability import Redactor, config_secrets, mask_phone
from consumer.testing import capture_logs


def test_phone_numbers_are_masked():
    assert mask_phone("+14155550123") == "+141******23"
    assert "+14155550123" not in mask_phone("+14155550123")


def test_secrets_from_config_never_reach_a_log_line():
    config = parse_config(
        {
            "providers": {
                "p": {
                    "url": "https://x.example",
                    "format": "json",
                    "payload": {"to": "$$To", "b": "$$Body"},
                    "auth": {"type": "basic", "username": "u", "password": "hunter2-pass"},
                    "headers": {"X-Api-Key": "${KEY}"},
                }
            }
        },
        env={"KEY": "k-123456-secret"},
    )
    secrets = config_secrets(config)
    assert {"hunter2-pass", "k-123456-secret"} <= set(secrets)
    with capture_logs(secrets) as out:
        log = structlog.get_logger("t")
        log.warning("oops", detail="auth failed for hunter2-pass", to="+14155550123", api_key="anything")
        log.info("nested", extra={"headers": {"X-Api-Key": "k-123456-secret"}})
    text = out.getvalue()
    assert "hunter2-pass" not in text and "k-123456-secret" not in text and "+14155550123" not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines[0]["api_key"] == "***" and lines[0]["to"].startswith("+141")


def test_redactor_masks_inside_any_string():
    r = Redactor(["topsecret"])
    assert r.scrub("Bearer topsecret!") == "Bearer ***!"


def test_render_masks_preset_secrets_even_url_encoded_in_a_form_body_or_query():
    from consumer.render import render_event

    env = {"TEXTLOCAL_API_KEY": "ab/c+d=e&f key", "SMSINDIAHUB_USER": "acme", "SMSINDIAHUB_PASSWORD": "p@ss/w+rd"}
    config = parse_config({"providers": {"tl": {"preset": "textlocal"}, "sih": {"preset": "smsindiahub"}}}, env=env)
    for name in ("tl", "sih"):
        event = {"message_id": "m", "campaign_id": "c", "provider": name, "to": "+919812345678", "body": "hi"}
        text = render_event(config, name, orjson.dumps({**event, "replacements": {"sender": "ACME"}}))
        assert "***" in text
        for secret in ("ab/c+d=e&f key", "ab%2Fc%2Bd%3De%26f+key", "p@ss/w+rd", "p%40ss%2Fw%2Brd"):
            assert secret not in text
