"""Child processes of the benchmark: starting them tied to our life, waiting until they serve, stopping them,
and reading their CPU time and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from consumer.lifetime import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: children run there, so `python -m bench...` and `python -m consumer` resolve."""


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, without service overrides that would change what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system, all threads, and of the children it waited for) and resident memory of a
    process, or the sum over a process tree."""

    cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_s + other.cpu_s, self.rss_bytes + other.rss_bytes, self.peak_rss_bytes + other.peak_rss_bytes
        )


def usage(pid: int) -> Usage | None:
    """Read `/proc/<pid>`; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime (fields 14 to 17 of stat): a child's time moves to cutime when it is reaped.
    cpu = sum(int(f) for f in fields[11:15]) / _CLK_TCK
    rss = peak = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return Usage(cpu, rss, peak)


def children(pid: int) -> list[int]:
    """The child processes of `pid`."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:  # no `children` files (CONFIG_PROC_CHILDREN): look at every process's parent
        found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_usage(pid: int) -> Usage | None:
    """The usage of `pid` and every descendant, summed (the peak RSS: the sum of each process's peak, an upper
    bound of the tree's); None when `pid` is gone."""
    total = usage(pid)
    if total is None:
        return None
    todo = children(pid)
    while todo:
        child = todo.pop()
        found = usage(child)
        if found is not None:
            total += found
            todo += children(child)
    return total


class Child:
    """One child process, its output going to a log file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.peak_rss = 0

    @classmethod
    async def start(
        cls,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env=child_env(env),
                preexec_fn=die_with_parent(os.getpid()),
            )
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def usage(self) -> Usage | None:
        """The usage of the child and its own children (e.g. the service's worker processes), summed."""
        found = tree_usage(self.pid) if self.alive else None
        if found is not None:
            self.peak_rss = max(self.peak_rss, found.peak_rss_bytes)
        return found

    def log_tail(self, limit: int = 2000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )

    async def wait_for_line(self, text: str, timeout: float) -> None:
        """Wait until the child's log holds `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log_tail(100_000):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not print {text!r} within {timeout:g} s; log {self.log_path}")
            await asyncio.sleep(0.05)

    async def wait_http_ok(self, url: str, timeout: float) -> None:
        """Wait until `GET url` answers 2xx."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                self.check_alive()
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if 200 <= response.status < 300:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready at {url} within {timeout:g} s; log {self.log_path}")
                await asyncio.sleep(0.1)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Ask the child to stop; kill it if it has not within `timeout`. Returns its exit code."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return await self.process.wait()
