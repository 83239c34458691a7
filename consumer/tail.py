"""`sms-consumer status-tail`: follow the status topic and print a live summary every interval.

The summary counts statuses by status and by provider, gives the rate per second, and lists the last few
failures with their reason; phone numbers are masked. Ctrl-C or SIGTERM prints a last summary and stops.
Connection settings (security protocol, TLS, SASL) come from `--config FILE` or the `SMS_KAFKA_*` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from consumer import loop
from consumer.config import format_validation_error
from consumer.errors import ConfigError, SmsConsumerError
from consumer.kafka_client import connection_failure, connection_kwargs, describe
from consumer.observability import mask_phone

_PHONE = re.compile(r"\+[1-9][0-9]{6,14}\b|\b[0-9]{8,15}\b")
_FETCH_WAIT_S = 0.2


@dataclass(frozen=True)
class Failure:
    """One status that is not `sent`, as shown in the summary (phone numbers already masked)."""

    at: str
    provider: str
    status: str
    code: str
    reason: str
    message_id: str
    to: str


@dataclass
class StatusSummary:
    """Counts of the delivery statuses seen so far, and the last failures (pure: fed one record value at a time)."""

    keep_failures: int = 5
    total: int = 0
    unreadable: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_provider: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: deque[Failure] = field(init=False)

    def __post_init__(self) -> None:
        self.failures = deque(maxlen=self.keep_failures)

    def add(self, value: bytes | None, at: float | None = None) -> None:
        """Count one record value of the status topic; values that are not statuses are counted apart."""
        try:
            doc = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
            self.unreadable += 1
            return
        status = doc["status"]
        provider = str(doc.get("provider") or "-")
        self.total += 1
        self.by_status[status] += 1
        self.by_provider[(provider, status)] += 1
        if status != "sent":
            raw = doc.get("reason")
            reason: dict[str, Any] = raw if isinstance(raw, dict) else {}
            to = doc.get("to")
            self.failures.append(
                Failure(
                    at=_clock_time(doc.get("completed_at"), at),
                    provider=provider,
                    status=status,
                    code=str(reason.get("code") or "-"),
                    reason=mask_phones(str(reason.get("message") or "")),
                    message_id=str(doc.get("message_id") or "-"),
                    to=mask_phone(to) if isinstance(to, str) else "-",
                )
            )

    def render(self, *, elapsed: float, window: float, window_count: int, title: str = "") -> str:
        """The summary as text: totals and rates, counts by status and by provider, the last failures."""
        rate = self.total / elapsed if elapsed > 0 else 0.0
        recent = window_count / window if window > 0 else 0.0
        lines = [
            f"{title}{self.total} statuses in {elapsed:.1f} s: {rate:.1f}/s overall, {recent:.1f}/s in the last "
            f"{window:.1f} s" + (f"; {self.unreadable} unreadable records" if self.unreadable else ""),
            "",
            f"{'status':<16}{'count':>8}",
        ]
        lines += [f"{status:<16}{n:>8}" for status, n in sorted(self.by_status.items())]
        lines += ["", f"{'provider':<16}{'status':<16}{'count':>8}"]
        lines += [f"{p:<16}{s:<16}{n:>8}" for (p, s), n in sorted(self.by_provider.items())]
        if self.failures:
            lines += ["", "last failures:"]
            for f in self.failures:
                lines.append(
                    f"  {f.at} {f.provider} {f.status} {f.code} to={f.to} message_id={f.message_id}: {f.reason}"
                )
        return "\n".join(lines) + "\n"


def _clock_time(completed_at: Any, read_at: float | None) -> str:
    """HH:MM:SS (UTC) of a status: when it completed, else when it was read."""
    if isinstance(completed_at, str) and len(completed_at) >= 19 and completed_at[10] == "T":
        return completed_at[11:19]
    return time.strftime("%H:%M:%S", time.gmtime(time.time() if read_at is None else read_at))


def mask_phones(text: str) -> str:
    """Mask every phone-number-like run of digits in free text (a provider's error may quote the number)."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


async def follow(
    consumer: AIOKafkaConsumer,
    summary: StatusSummary,
    out: TextIO,
    stop: asyncio.Event,
    *,
    interval: float,
    title: str = "",
) -> None:
    """Read statuses from a started consumer into `summary`, printing it every `interval` seconds and once
    more, marked final, when `stop` is set."""
    started = last = time.monotonic()
    last_total = 0
    next_print = started + interval

    def show(now: float, final: bool) -> None:
        text = summary.render(
            elapsed=now - started, window=now - last, window_count=summary.total - last_total, title=title
        )
        rule = "=" if final else "-"
        out.write(f"{rule * 48}\n{'final: ' if final else ''}{text}")
        out.flush()

    while not stop.is_set():
        wait_s = max(0.0, min(next_print - time.monotonic(), _FETCH_WAIT_S))
        batches = await consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=10_000)
        at = time.time()
        for records in batches.values():
            for record in records:
                summary.add(record.value, at)
        now = time.monotonic()
        if now >= next_print:
            show(now, final=False)
            last, last_total = now, summary.total
            next_print = now + interval
    show(time.monotonic(), final=True)


async def run_tail(
    settings: Any,
    topic: str,
    *,
    from_beginning: bool,
    interval: float,
    out: TextIO,
    stop: asyncio.Event,
    keep_failures: int = 5,
) -> StatusSummary:
    """Follow `topic` with the connection of `settings` (`KafkaSettings`) until `stop` is set."""
    consumer = AIOKafkaConsumer(
        topic,
        **connection_kwargs(settings),
        client_id=f"{settings.client_id}-status-tail",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    summary = StatusSummary(keep_failures=keep_failures)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise await connection_failure(settings, exc) from None
    try:
        await follow(consumer, summary, out, stop, interval=interval, title=f"{topic} at {describe(settings)}\n")
    finally:
        await consumer.stop()
    return summary


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sms-consumer status-tail",
        description="Follow the delivery-status topic and print a live summary until Ctrl-C.",
    )
    parser.add_argument(
        "--config", default=None, help="service configuration file whose `kafka` section to use (servers, security)"
    )
    parser.add_argument(
        "--bootstrap", default=None, help="bootstrap servers (default: --config, else SMS_KAFKA_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument("--topic", default=None, help="status topic (default: the configuration's)")
    parser.add_argument(
        "--from-beginning", action="store_true", help="read the topic from its start, not just new statuses"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between summaries (default 2)")
    parser.add_argument("--failures", type=int, default=5, help="how many recent failures to show (default 5)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if args.failures < 0:
        parser.error("--failures must not be negative")
    return args


def _settings(args: argparse.Namespace) -> Any:
    from schemas.config import KafkaSettings

    if args.config is not None:
        from consumer.config import load_config

        settings = load_config(args.config).kafka
    else:
        settings = KafkaSettings()  # the SMS_KAFKA_* environment
    if args.bootstrap:
        settings = settings.model_copy(update={"bootstrap_servers": args.bootstrap})
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sms-consumer status-tail`: 0 after Ctrl-C/SIGTERM, 2 when Kafka or the configuration fails."""
    args = _parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            settings = _settings(args)
            await run_tail(
                settings,
                args.topic or settings.status_topic,
                from_beginning=args.from_beginning,
                interval=args.interval,
                out=sys.stdout,
                stop=stop,
                keep_failures=args.failures,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        loop.run(run())
    except (ConfigError, SmsConsumerError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: invalid SMS_KAFKA_* settings: {exc.error_count()} problem(s)", file=sys.stderr)
        for line in format_validation_error(exc, "kafka"):
            print(f"  {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
