"""Kafka connection options shared by every client the service makes (consumer, status producer, tools).

`connection_kwargs` turns the `kafka` settings into aiokafka's connection arguments: bootstrap servers,
security protocol, TLS context and SASL credentials. `connection_failure` explains a failed start in words
(wrong credentials, unsupported mechanism, TLS refused, unreachable), since aiokafka reports only
"Unable to bootstrap" and logs the cause.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from consumer.errors import ConfigError, SmsConsumerError

_PROBE_TIMEOUT_S = 10.0


class KafkaConnectError(SmsConsumerError):
    """The service could not connect to Kafka; the message says why, never with a secret."""

    code = "kafka_unavailable"


def ssl_context(settings: Any) -> ssl.SSLContext:
    """The TLS context of `SSL` / `SASL_SSL` connections. Raises `ConfigError` for unusable files."""
    password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password is not None else None
    try:
        context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
            password=password,
        )
    except (OSError, ssl.SSLError) as exc:
        # The reason names the file's problem (not PEM, wrong key password), never the password.
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        files = ", ".join(
            f"{name}={getattr(settings, name)}"
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if getattr(settings, name) is not None
        )
        raise ConfigError("kafka", [f"kafka: cannot load the TLS files ({files or 'system CAs'}): {reason}"]) from None
    context.check_hostname = settings.ssl_check_hostname
    return context


def connection_kwargs(settings: Any) -> dict[str, Any]:
    """aiokafka connection arguments from `KafkaSettings`: servers, security protocol, TLS and SASL."""
    protocol = settings.security_protocol
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def describe(settings: Any) -> str:
    """The connection in words, for errors and logs: servers, protocol, mechanism and user (no secret)."""
    text = f"{settings.bootstrap_servers} ({settings.security_protocol}"
    if settings.security_protocol.startswith("SASL_"):
        text += f", {settings.sasl_mechanism} as {settings.sasl_username!r}"
    return text + ")"


async def connection_failure(settings: Any, error: BaseException) -> KafkaConnectError:
    """Why connecting with `settings` failed: tries each bootstrap server once more and names the cause.

    `error` is what the client raised; it is the answer when no server explains better.
    """
    kwargs = connection_kwargs(settings)
    causes: list[str] = []
    code = KafkaConnectError.code
    for host, port, _family in collect_hosts(settings.bootstrap_servers, randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    request_timeout_ms=int(_PROBE_TIMEOUT_S * 1000),
                    ssl_context=kwargs.get("ssl_context"),
                    security_protocol=kwargs["security_protocol"],
                    sasl_mechanism=kwargs.get("sasl_mechanism"),
                    sasl_plain_username=kwargs.get("sasl_plain_username"),
                    sasl_plain_password=kwargs.get("sasl_plain_password"),
                ),
                _PROBE_TIMEOUT_S,
            )
        except SaslAuthenticationFailed as exc:
            code = "kafka_auth_failed"
            causes.append(f"{host}:{port}: authentication failed: {_broker_message(exc)}")
        except UnsupportedSaslMechanismError as exc:
            code = "kafka_auth_failed"
            causes.append(f"{host}:{port}: SASL mechanism not enabled on the broker: {_broker_message(exc)}")
        except IllegalSaslStateError:
            code = "kafka_auth_failed"
            causes.append(f"{host}:{port}: the listener does not expect SASL (check security_protocol)")
        except ssl.SSLCertVerificationError as exc:
            causes.append(f"{host}:{port}: broker certificate not trusted: {exc.verify_message or exc.reason}")
        except ssl.SSLError as exc:
            causes.append(f"{host}:{port}: TLS handshake failed: {exc.reason or type(exc).__name__}")
        except TimeoutError:
            causes.append(f"{host}:{port}: no answer within {_PROBE_TIMEOUT_S:g} s")
        except OSError as exc:
            causes.append(f"{host}:{port}: cannot connect: {exc.strerror or type(exc).__name__}")
        except KafkaConnectionError:
            hint = "check security_protocol"
            if settings.security_protocol in ("SSL", "SASL_SSL") and settings.ssl_certfile is None:
                hint += ", and give ssl_certfile if the broker wants a client certificate"
            causes.append(f"{host}:{port}: the broker closed the connection; {hint}")
        except KafkaError as exc:
            causes.append(f"{host}:{port}: {type(exc).__name__}: {_broker_message(exc)}")
        else:
            try:
                # A listener of another protocol may still answer the first request, then drops the client.
                await asyncio.wait_for(conn.send(MetadataRequest([])), _PROBE_TIMEOUT_S)
            except (KafkaError, TimeoutError) as exc:
                causes.append(
                    f"{host}:{port}: connected, then the broker dropped the client ({type(exc).__name__}); "
                    "check security_protocol"
                )
            finally:
                conn.close()
    if not causes:
        causes.append(f"{type(error).__name__}: {error}")
    return KafkaConnectError(f"cannot connect to Kafka at {describe(settings)}: " + "; ".join(causes), code=code)


def _broker_message(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else ""
    return text.removeprefix("[Error ").split("] ", 1)[-1] if text else type(exc).__name__
