"""Authentication settings: the shape of each `auth` type, secrets from files, the botocore requirement of
SigV4, what the redactor learns from the configuration, and how `render` shows credentials."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import pytest

from consumer.auth import canonical_query_url
from consumer.config import load_config, parse_config
from consumer.errors import ConfigError
from consumer.observability import config_secrets
from consumer.render import render_event
from schemas.config import BasicAuth, OAuth2Auth, SigV4Auth

PROVIDER = {"url": "https://sms.example/send", "format": "json", "payload": {"to": "$$To", "text": "$$Body"}}
OAUTH = {"type": "oauth2", "token_url": "https://auth.example/token", "client_id": "cid", "client_secret": "cs-1"}
SIGV4 = {
    "type": "sigv4",
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "sak-secret-1",
    "region": "us-east-1",
    "service": "sms-voice",
}


def config_with(auth: dict[str, Any], env: dict[str, str] | None = None, **extra: Any) -> Any:
    return parse_config({"providers": {"p": {**PROVIDER, "auth": auth, **extra}}}, env=env or {})


def problems_of(auth: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config_with(auth)
    return err.value.problems


def test_oauth2_takes_documented_defaults():
    auth = config_with(OAUTH).providers["p"].auth
    assert isinstance(auth, OAuth2Auth)
    assert auth.client_auth == "basic" and auth.retry_interval_s == 120 and auth.scope is None
    assert auth.refresh_before_s == 30 and auth.refresh_before_ratio == 0.1 and auth.extra_params == {}
    assert auth.client_secret.get_secret_value() == "cs-1" and "cs-1" not in repr(auth)


def test_sigv4_takes_credentials_region_and_service():
    auth = config_with({**SIGV4, "session_token": "session-tok-1"}).providers["p"].auth
    assert isinstance(auth, SigV4Auth) and auth.service == "sms-voice" and auth.region == "us-east-1"
    assert auth.session_token is not None and "session-tok-1" not in repr(auth)


def test_auth_errors_name_the_field_without_the_type_tag():
    problems = problems_of({"type": "oauth2", "token_url": "ftp://x", "client_id": "c", "client_secret": "s"})
    assert problems == ["providers.p.auth.token_url: must start with http:// or https://"]
    problems = problems_of({"type": "sigv4", "access_key_id": "a", "secret_access_key": "s", "region": "r"})
    assert problems == ["providers.p.auth.service: Field required"]
    assert any("does not match any of the expected tags" in p for p in problems_of({"type": "kerberos"}))
    assert problems_of({**OAUTH, "client_auth": "mtls"})[0].startswith("providers.p.auth.client_auth:")


def test_secrets_are_read_from_files(tmp_path):
    (tmp_path / "password").write_text("file-password\n")
    (tmp_path / "client").write_text("file-client-secret\r\n")
    (tmp_path / "aws").write_text("file-aws-secret")
    (tmp_path / "session").write_text("file-session\n")
    basic = config_with({"type": "basic", "username": "u", "password_file": str(tmp_path / "password")})
    assert isinstance(basic.providers["p"].auth, BasicAuth)
    assert basic.providers["p"].auth.password.get_secret_value() == "file-password"
    oauth = {k: v for k, v in OAUTH.items() if k != "client_secret"}
    oauth2 = config_with({**oauth, "client_secret_file": "${SECRETS}/client"}, env={"SECRETS": str(tmp_path)})
    assert oauth2.providers["p"].auth.client_secret.get_secret_value() == "file-client-secret"
    aws = {k: v for k, v in SIGV4.items() if k != "secret_access_key"}
    sigv4 = config_with(
        {**aws, "secret_access_key_file": str(tmp_path / "aws"), "session_token_file": str(tmp_path / "session")}
    )
    auth = sigv4.providers["p"].auth
    assert auth.secret_access_key.get_secret_value() == "file-aws-secret"
    assert auth.session_token.get_secret_value() == "file-session"
    assert {"file-password", "file-client-secret", "file-aws-secret", "file-session"} <= set(
        config_secrets(basic) + config_secrets(oauth2) + config_secrets(sigv4)
    )


def test_an_unreadable_secret_file_is_a_config_error_with_path_and_reason(tmp_path):
    missing = tmp_path / "nope"
    problems = problems_of({"type": "basic", "username": "u", "password_file": str(missing)})
    assert problems == [f"providers.p.auth: password_file: cannot read {missing}: No such file or directory"]
    problems = problems_of({"type": "basic", "username": "u", "password_file": str(tmp_path)})
    assert problems == [f"providers.p.auth: password_file: cannot read {tmp_path}: Is a directory"]
    (tmp_path / "empty").write_text("\n")
    problems = problems_of({"type": "basic", "username": "u", "password_file": str(tmp_path / "empty")})
    assert problems == [f"providers.p.auth: password_file: {tmp_path / 'empty'} is empty"]
    (tmp_path / "pw").write_text("x")
    problems = problems_of({"type": "basic", "username": "u", "password": "p", "password_file": str(tmp_path / "pw")})
    assert problems == ["providers.p.auth: give `password` or `password_file`, not both"]
    assert problems_of({"type": "basic", "username": "u"}) == ["providers.p.auth.password: Field required"]


def test_a_secret_file_never_shows_in_errors(tmp_path):
    (tmp_path / "secret").write_text("do-not-print-me")
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  p:\n    url: https://x\n    format: json\n    payload: {to: $$To, b: $$Body}\n"
        f"    auth: {{type: oauth2, token_url: 'ftp://bad', client_id: c, client_secret_file: {tmp_path / 'secret'}}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "do-not-print-me" not in str(err.value) and "providers.p.auth.token_url" in str(err.value)


def test_sigv4_without_botocore_fails_validation_naming_the_extra(monkeypatch):
    for name in ("botocore", "botocore.auth", "botocore.awsrequest", "botocore.credentials"):
        monkeypatch.setitem(sys.modules, name, None)  # `import botocore...` now raises ImportError
    problems = problems_of(SIGV4)
    assert problems == [
        "providers.p.auth: AWS SigV4 signing needs botocore: install the `aws` extra (pip install 'sms-consumer[aws]')"
    ]
    config_with(OAUTH)  # other auth types do not need it


def test_config_secrets_cover_auth_secrets_and_credentials_in_headers_query_url_and_payload():
    env = {"TOKEN": "tok-static-1", "KEY": "key-query-1", "HDR": "hdr-key-1", "BODY": "body-key-1", "URLK": "url-key-1"}
    config = parse_config(
        {
            "providers": {
                "oauth": {**PROVIDER, "auth": {**OAUTH, "extra_params": {"client_assertion": "assert-1", "aud": "x"}}},
                "aws": {**PROVIDER, "auth": {**SIGV4, "session_token": "session-1"}},
                "keys": {
                    "url": "https://user:url-pass-1@sms.example/send?key=${URLK}&to=$$To",
                    "headers": {
                        "Authorization": "Bearer ${TOKEN}",
                        "X-Auth": "${HDR}",
                        "X-Trace": "Bearer trace-tok-1",
                    },
                    "query": {"apikey": "${KEY}", "text": "$$Body", "sender": "ACME"},
                    "format": "json",
                    "payload": {"auth": {"api_key": "${BODY}"}, "to": "$$To", "text": "$$Body"},
                },
            }
        },
        env=env,
    )
    secrets = set(config_secrets(config))
    expected = {"cs-1", "assert-1", "sak-secret-1", "session-1", "url-pass-1", "trace-tok-1", *env.values()}
    assert expected <= secrets
    assert "Bearer tok-static-1" in secrets
    assert not {"ACME", "x", "cid", "AKIDEXAMPLE"} & secrets


@pytest.mark.parametrize(
    ("auth", "line"),
    [
        ({"type": "basic", "username": "u", "password": "pw-secret-1"}, "Authorization: Basic ***"),
        (OAUTH, "Authorization: Bearer ***"),
        ({**SIGV4, "session_token": "session-1"}, "Authorization: AWS4-HMAC-SHA256 ***"),
    ],
)
def test_render_masks_the_credentials_of_each_auth_type(auth, line):
    # The token endpoint is never called: its host does not resolve, and render has no network anyway.
    config = config_with(auth, query={"label": "a b"})
    event = {"message_id": "m", "campaign_id": "c", "provider": "p", "to": "+14155550100", "body": "hi"}
    text = render_event(config, "p", orjson.dumps(event))
    assert line in text.splitlines()
    for secret in ("pw-secret-1", "cs-1", "sak-secret-1", "session-1"):
        assert secret not in text
    if auth["type"] == "sigv4":
        assert "POST https://sms.example/send?label=a%20b" in text and "X-Amz-Security-Token: ***" in text
    else:
        assert "POST https://sms.example/send?label=a+b" in text


def test_canonical_query_url_uses_rfc3986_encoding():
    assert canonical_query_url("https://h/p?b=a+b&a=x%2Fy~&c=") == "https://h/p?b=a%20b&a=x%2Fy~&c="
    assert canonical_query_url("https://h/p") == "https://h/p"
