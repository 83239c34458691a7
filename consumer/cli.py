"""The command line: `sms-consumer run|validate|render|demo|dev-broker|demo-provider|status-tail`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from consumer.errors import ConfigError, EventError, SmsConsumerError


def _run(args: argparse.Namespace) -> int:
    if args.workers > 1:
        from consumer.workers import supervise

        return supervise(args.config, args.workers)
    role = None
    if args.worker_index is not None:  # one worker of `run --workers N`
        from consumer.workers import WorkerRole

        role = WorkerRole(args.worker_index)

    from consumer.app import Service
    from consumer.config import load_config
    from consumer.observability import Redactor, config_secrets, configure_logging

    config = load_config(args.config)
    if role is not None:
        config = role.configure(config)
    obs = config.observability
    configure_logging(
        level=obs.log_level,
        fmt=obs.log_format,
        redactor=Redactor(config_secrets(config)),
        stream=role.log_stream() if role is not None else None,
        final=True,
    )
    service = Service(config)

    async def main() -> None:
        if role is not None:
            role.install_signal_handlers(service)
        else:
            service.install_signal_handlers()
        await service.run()

    from consumer.loop import run

    run(main())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.templates import compile_providers

    config = load_config(args.config)
    providers = compile_providers(config.providers)
    print(f"{args.config}: valid")
    for name, provider in providers.items():
        preset = f"preset {provider.config.preset}; " if provider.config.preset else ""
        custom = ", ".join(f"$${n}" for n in sorted(provider.custom_names)) or "none"
        print(
            f"  {name}: {provider.config.method} {provider.config.url} "
            f"({preset}{_batching(provider)}; custom replacements: {custom})"
        )
    return 0


def _batching(provider: Any) -> str:
    """How a provider's messages share requests, in words."""
    if not provider.batching:
        return "one request per message"
    size, key = provider.batch_size, provider.batch_key
    if provider.mode == "records":
        return f"batches of up to {size} records " + (f"under {key!r}" if key else "as the body")
    if provider.mode == "joined":
        return f"batches of up to {size} recipients joined with {provider.separator!r} in {key!r}"
    if provider.mode == "keyed":
        return f"batches of up to {size} recipients as the keys of {key!r}"
    return f"batches of up to {size} recipients in {key!r}"


def _render(args: argparse.Namespace) -> int:
    from consumer.config import load_config
    from consumer.render import render_event

    config = load_config(args.config)
    events = Path(args.event).read_bytes()
    print(render_event(config, args.provider, events), end="")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sms-consumer` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sms-consumer", description="Send SMS from Kafka through any HTTP provider.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the service")
    p.add_argument("config", help="YAML configuration file")
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes in the consumer group (default 1); worker I serves on observability.http_port + I",
    )
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
    p = sub.add_parser("validate", help="check a configuration file and exit")
    p.add_argument("config")
    p.set_defaults(func=_validate)
    p = sub.add_parser("render", help="print the HTTP request(s) an event would produce, without sending")
    p.add_argument("config")
    p.add_argument("--provider", required=True)
    p.add_argument("--event", required=True, help="file with one JSON send-request, or a JSON array of them")
    p.set_defaults(func=_render)
    # Commands that own their arguments.
    passthrough = {"demo", "dev-broker", "demo-provider", "status-tail"}
    for name, helptext in (
        ("demo", "run the whole job on a local broker and demo provider"),
        ("dev-broker", "start a local Apache Kafka broker (or cluster) for development"),
        ("demo-provider", "run the bundled demo SMS provider"),
        ("status-tail", "follow the status topic and print a live summary"),
    ):
        sub.add_parser(name, help=helptext, add_help=False)
    if argv and argv[0] in passthrough:
        rest = argv[1:]
        if argv[0] == "demo":
            from consumer.demo import main as demo_main

            return demo_main(rest)
        if argv[0] == "dev-broker":
            from consumer.devbroker import main as broker_main

            return broker_main(rest)
        if argv[0] == "status-tail":
            from consumer.tail import main as tail_main

            return tail_main(rest)
        from consumer.demo_provider import main as provider_main

        return provider_main(rest)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (EventError, SmsConsumerError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
