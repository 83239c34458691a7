"""The supervisor of `sms-consumer run CONFIG --workers N`, in a process of its own.

`run --workers N` checks the configuration and then replaces itself (same process id, so a process manager's
signals still reach it) with `python -m consumer.supervisor`, which loads nothing of the service: no Kafka or
HTTP client, no configuration models, no asyncio. It only starts, watches, signals and restarts the workers
(see `consumer.workers`), so it holds a few megabytes instead of a service's worth of modules. Its log lines
have the shape of the service's (JSON or console) without its logging stack; they carry no configuration
values, so there is nothing to redact.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson

from consumer.lifetime import die_with_parent

CANNOT_START = 2
"""The exit code of `sms-consumer run` when it cannot start (configuration, connection, port)."""
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A worker that ran this long before exiting is restarted after the initial backoff again."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def next_backoff(current: float, ran_s: float) -> tuple[float, float]:
    """(delay before this restart, the delay after the next exit) for a worker that exited after `ran_s`."""
    delay = BACKOFF_INITIAL_S if ran_s >= STABLE_AFTER_S else current
    return delay, min(delay * 2, BACKOFF_MAX_S)


class Log:
    """Log lines as the service writes them (`consumer.observability`): JSON objects with `event`, `level` and
    an ISO `timestamp` in UTC, or the console renderer's `timestamp [level] event key=value`. Each line reaches
    the file descriptor in one write, so the lines of processes sharing it do not interleave."""

    def __init__(self, level: str = "info", fmt: str = "json", fd: int = 2) -> None:
        self._lowest = _LEVELS[level]
        self._fd = fd
        self._console = fmt == "console" or (fmt == "auto" and os.isatty(fd))

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < self._lowest:
            return
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if self._console:
            pairs = "".join(f" {key}={value}" for key, value in sorted(fields.items()))
            line = f"{timestamp} [{level:<9}] {event:<30}{pairs}\n".encode(errors="backslashreplace")
        else:
            line = orjson.dumps({"event": event, **fields, "level": level, "timestamp": timestamp}) + b"\n"
        os.write(self._fd, line)

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)


def _describe(code: int) -> dict[str, Any]:
    """An exit status for the log: the code, and the signal's name when a signal ended the process."""
    if code < 0:
        try:
            return {"code": code, "signal": signal.Signals(-code).name}
        except ValueError:
            return {"code": code}
    return {"code": code}


@dataclass
class _Slot:
    """One worker: its process while it runs, and when to start it again when it does not."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    launches: int = 0
    forwarded: int = 0
    """How many of the stop signals received so far this launch was sent."""
    backoff: float = BACKOFF_INITIAL_S
    restart_at: float = 0.0


class Supervisor:
    """Runs `count` workers (`command(index)` starts worker `index`) until a stop signal; see the module doc."""

    def __init__(self, command: Callable[[int], Sequence[str]], count: int, log: Log, *, poll_s: float = 0.1) -> None:
        self._command = command
        self._log = log
        self._slots = [_Slot(i) for i in range(count)]
        self._poll_s = poll_s
        self._stops: list[int] = []
        """Stop signals to forward to every running worker, in order."""
        self._announced = 0
        self._cannot_start = False
        self._failed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stops.append(signum)  # forwarded by the loop: a handler does not touch the processes

    @property
    def stopping(self) -> bool:
        return bool(self._stops)

    def run(self) -> int:
        """Supervise until every worker stopped after a stop signal. Returns 0 when all stopped cleanly, 2 when a
        worker could not start, 1 when a worker failed while stopping."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked across the exec into this process
        try:
            self._log.info("starting workers", workers=len(self._slots), pid=os.getpid())
            while True:
                now = time.monotonic()
                self._announce()
                for slot in self._slots:
                    if slot.process is not None:
                        self._watch(slot, now)
                    elif not self.stopping and now >= slot.restart_at:
                        self._start(slot)
                if self.stopping and all(slot.process is None for slot in self._slots):
                    break
                time.sleep(self._poll_s)
        finally:
            for slot in self._slots:  # only after an unexpected error in this loop: do not leave workers behind
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.kill()
                    slot.process.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = CANNOT_START if self._cannot_start else 1 if self._failed else 0
        self._log.info("workers stopped", code=code)
        return code

    def _announce(self) -> None:
        for sig in self._stops[self._announced :]:
            self._announced += 1
            name = signal.Signals(sig).name
            if self._announced == 1:
                self._log.info("stop requested: stopping the workers", signal=name)
            else:
                self._log.warning("another stop request: forwarded to the workers, which stop now", signal=name)

    def _start(self, slot: _Slot) -> None:
        tie = die_with_parent(os.getpid())

        def setup() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # pending until the worker can keep them
            tie()

        slot.process = subprocess.Popen(
            list(self._command(slot.index)),
            stdin=subprocess.DEVNULL,
            preexec_fn=setup,
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor only, which forwards it once
        )
        slot.started = time.monotonic()
        slot.launches += 1
        slot.forwarded = 0
        self._log.info("worker started", worker=slot.index, pid=slot.process.pid, launch=slot.launches)

    def _watch(self, slot: _Slot, now: float) -> None:
        process = slot.process
        assert process is not None
        code = process.poll()
        if code is None:
            while slot.forwarded < len(self._stops):
                process.send_signal(self._stops[slot.forwarded])
                slot.forwarded += 1
            return
        slot.process = None
        ran_s = round(now - slot.started, 1)
        first_failure = code == CANNOT_START and slot.launches == 1 and ran_s < STABLE_AFTER_S
        if self.stopping:
            # A worker ended by the forwarded signal itself had not started consuming yet.
            clean = code == 0 or -code in self._stops[: slot.forwarded]
            if clean:
                self._log.info("worker stopped", worker=slot.index, **_describe(code))
            elif first_failure and self._cannot_start:  # it failed as the one that stopped the service did
                self._log.error("worker could not start", worker=slot.index, **_describe(code))
            else:
                self._failed = True
                self._log.error("worker failed while stopping", worker=slot.index, ran_s=ran_s, **_describe(code))
            return
        if first_failure:
            self._cannot_start = True
            self._stops.append(signal.SIGTERM)
            self._log.error("worker could not start: stopping the others", worker=slot.index, **_describe(code))
            return
        delay, slot.backoff = next_backoff(slot.backoff, ran_s)
        slot.restart_at = now + delay
        self._log.warning(
            "worker exited unexpectedly: restarting it",
            worker=slot.index,
            ran_s=ran_s,
            restart_in_s=delay,
            **_describe(code),
        )


def worker_command(config_path: str, index: int) -> list[str]:
    """The command line of worker `index`: the ordinary service, told which worker it is."""
    return [sys.executable, "-m", "consumer", "run", "--worker-index", str(index), "--", config_path]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m consumer.supervisor --log-level L --log-format F -- CONFIG WORKERS`, for a configuration that
    `run --workers` has already checked."""
    parser = argparse.ArgumentParser(prog="python -m consumer.supervisor")
    parser.add_argument("config")
    parser.add_argument("workers", type=int)
    parser.add_argument("--log-level", choices=sorted(_LEVELS), default="info")
    parser.add_argument("--log-format", choices=("json", "console", "auto"), default="json")
    args = parser.parse_args(argv)
    log = Log(args.log_level, args.log_format)
    cpus = os.cpu_count() or 1
    if args.workers > cpus:
        log.warning("more workers than CPU cores", workers=args.workers, cpus=cpus)
    return Supervisor(lambda index: worker_command(args.config, index), args.workers, log).run()


if __name__ == "__main__":
    raise SystemExit(main())
