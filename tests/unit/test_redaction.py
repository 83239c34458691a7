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
