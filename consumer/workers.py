"""`sms-consumer run CONFIG --workers N`: one supervising process and N worker processes in one consumer group.

The `run` process checks the configuration (an invalid one fails at once with its path and reason, as without
workers) and then becomes the supervisor (`consumer.supervisor`), which never connects to Kafka. It starts each
worker as `python -m consumer run CONFIG --worker-index I` (the ordinary service, in a process of its own),
forwards every SIGTERM/SIGINT to all of them (the first drains and commits, a second stops at once), and
restarts a worker that exits while no stop was asked for, after a backoff of 1 s doubling up to 30 s (back to
1 s once a worker ran for 60 s). A worker that cannot start at its first launch (exit code 2: configuration,
Kafka connection, port taken) stops the whole service with exit code 2. Workers die with the supervisor, even
when it is SIGKILLed.

Worker I serves its operations HTTP server on `observability.http_port + I` (port 0 stays 0: any free port) and
every log line it writes carries `worker=I`.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TextIO

import structlog

from consumer.supervisor import STOP_SIGNALS

if TYPE_CHECKING:
    from consumer.app import Service
    from schemas.config import ServiceConfig


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


def supervise(config_path: str, count: int) -> NoReturn:
    """`run CONFIG --workers COUNT`: check the configuration here (an invalid one fails at once with its path
    and reason, as without workers), then become the supervisor of the workers. Raises `ConfigError` for an
    invalid configuration."""
    from consumer.config import load_config
    from consumer.errors import ConfigError
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
    # Exec, not a child: the process id stays the one a process manager signals, and the memory of everything
    # imported for the check goes back. Stop signals wait, blocked, until the supervisor can take them.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    logging = ["--log-level", obs.log_level, "--log-format", obs.log_format]
    os.execv(sys.executable, [sys.executable, "-m", "consumer.supervisor", *logging, "--", config_path, str(count)])
