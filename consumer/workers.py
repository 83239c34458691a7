"""`sms-consumer run CONFIG --workers N`: one supervising process and N worker processes in one consumer group.

The supervisor never connects to Kafka. It checks the configuration, starts each worker as
`python -m consumer run CONFIG --worker-index I` (the ordinary service, in a process of its own), forwards every
SIGTERM/SIGINT to all of them (the first drains and commits, a second stops at once), and restarts a worker that
exits while no stop was asked for, after a backoff of 1 s doubling up to 30 s (back to 1 s once a worker ran for
60 s). A worker that cannot start at its first launch (exit code 2: configuration, Kafka connection, port taken)
stops the whole service with exit code 2. Workers die with the supervisor, even when it is SIGKILLed.

Worker I serves its operations HTTP server on `observability.http_port + I` (port 0 stays 0: any free port) and
every log line it writes carries `worker=I`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import structlog

if TYPE_CHECKING:
    from consumer.app import Service
    from schemas.config import ServiceConfig

log = structlog.get_logger("consumer.workers")

CANNOT_START = 2
"""The exit code of `sms-consumer run` when it cannot start (configuration, connection, port)."""
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A worker that ran this long before exiting is restarted after the initial backoff again."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def next_backoff(current: float, ran_s: float) -> tuple[float, float]:
    """(delay before this restart, the delay after the next exit) for a worker that exited after `ran_s`."""
    delay = BACKOFF_INITIAL_S if ran_s >= STABLE_AFTER_S else current
    return delay, min(delay * 2, BACKOFF_MAX_S)


def worker_port(port: int, index: int) -> int:
    """The operations port of worker `index`: `port + index`, and 0 (any free port) stays 0."""
    return port + index if port else 0


def line_stream() -> TextIO:
    """A line-buffered stream on standard error: each log line reaches the file descriptor in one write, so the
    lines of processes sharing it do not interleave (whatever `PYTHONUNBUFFERED` says)."""
    return open(sys.stderr.fileno(), "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


class WorkerRole:
    """What makes a `run` process worker `index` of a supervisor. Created first thing: the supervisor starts a
    worker with the stop signals blocked, so none is lost or kills it half-started; from here on one that
    arrives (or arrived) before the service can take it is kept, and handed to the service once it can."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._early: list[int] = []
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._keep)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _keep(self, signum: int, frame: FrameType | None) -> None:
        self._early.append(signum)

    def configure(self, config: ServiceConfig) -> ServiceConfig:
        """The worker's configuration: its own operations port."""
        obs = config.observability
        port = worker_port(obs.http_port, self.index)
        return config.model_copy(update={"observability": obs.model_copy(update={"http_port": port})})

    def log_stream(self) -> TextIO:
        """Bind `worker=index` to every log line of this process; returns the stream logs go to."""
        structlog.contextvars.bind_contextvars(worker=self.index)
        return line_stream()

    def install_signal_handlers(self, service: Service) -> None:
        """Let `service` handle stop signals, and hand it the ones that came before."""
        service.install_signal_handlers()
        for _ in self._early[:2]:
            service.request_stop()
        self._early.clear()


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

    def __init__(self, command: Callable[[int], Sequence[str]], count: int, *, poll_s: float = 0.1) -> None:
        self._command = command
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
        try:
            log.info("starting workers", workers=len(self._slots), pid=os.getpid())
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
        log.info("workers stopped", code=code)
        return code

    def _announce(self) -> None:
        for sig in self._stops[self._announced :]:
            self._announced += 1
            name = signal.Signals(sig).name
            if self._announced == 1:
                log.info("stop requested: stopping the workers", signal=name)
            else:
                log.warning("another stop request: forwarded to the workers, which stop now", signal=name)

    def _start(self, slot: _Slot) -> None:
        from consumer.devbroker import die_with_parent

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
        log.info("worker started", worker=slot.index, pid=slot.process.pid, launch=slot.launches)

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
        if self.stopping:
            # A worker ended by the forwarded signal itself had not started consuming yet.
            clean = code == 0 or -code in self._stops[: slot.forwarded]
            if clean:
                log.info("worker stopped", worker=slot.index, **_describe(code))
            else:
                self._failed = True
                log.error("worker failed while stopping", worker=slot.index, ran_s=ran_s, **_describe(code))
            return
        if code == CANNOT_START and slot.launches == 1 and ran_s < STABLE_AFTER_S:
            self._cannot_start = True
            self._stops.append(signal.SIGTERM)
            log.error("worker could not start: stopping the others", worker=slot.index, **_describe(code))
            return
        delay, slot.backoff = next_backoff(slot.backoff, ran_s)
        slot.restart_at = now + delay
        log.warning(
            "worker exited unexpectedly: restarting it",
            worker=slot.index,
            ran_s=ran_s,
            restart_in_s=delay,
            **_describe(code),
        )


def supervise(config_path: str, count: int) -> int:
    """`run CONFIG --workers COUNT`: check the configuration here (an invalid one fails at once with its path
    and reason, as without workers), then run the workers. Raises `ConfigError` for an invalid configuration."""
    from consumer.config import load_config
    from consumer.errors import ConfigError
    from consumer.observability import Redactor, config_secrets, configure_logging
    from consumer.templates import compile_providers

    config = load_config(config_path)
    compile_providers(config.providers)
    obs = config.observability
    last = obs.http_port + count - 1
    if obs.http_enabled and obs.http_port and last > 65535:
        raise ConfigError(
            config_path,
            [f"observability.http_port: {count} workers need ports {obs.http_port}..{last}, beyond 65535"],
        )
    configure_logging(
        level=obs.log_level, fmt=obs.log_format, redactor=Redactor(config_secrets(config)), stream=line_stream()
    )
    cpus = os.cpu_count() or 1
    if count > cpus:
        log.warning("more workers than CPU cores", workers=count, cpus=cpus)

    def command(index: int) -> list[str]:
        return [sys.executable, "-m", "consumer", "run", config_path, "--worker-index", str(index)]

    return Supervisor(command, count).run()
