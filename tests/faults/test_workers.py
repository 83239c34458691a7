"""`sms-consumer run --workers N` as a real process tree: the workers share the partitions, each serves on its
own port, a SIGTERM drains them all, a killed worker is restarted, and an invalid configuration fails at once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from consumer.ports import free_ports
from consumer.testing import collect, committed_offsets, create_topics, end_offsets, produce, wait_for
from tests.faults.harness import CountingProvider, ServiceProcess, service_config

pytestmark = [pytest.mark.fault]

PARTITIONS = 4


class Workers(ServiceProcess):
    """`python -m consumer run CONFIG --workers N`: the supervisor is `proc`, the workers are its children."""

    def __init__(self, config: dict[str, Any], workdir: Path, workers: int) -> None:
        super().__init__(config, workdir)
        self.workers = workers

    def start(self) -> None:
        logfile = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", str(self.path), "--workers", str(self.workers)],
            stdout=logfile,
            stderr=logfile,
        )

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of the supervisor and the workers."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(orjson.loads(line))  # a line that does not parse means two processes' lines mixed
        return out

    def launches(self, worker: int) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "worker started" and e.get("worker") == worker]

    def pid(self, worker: int) -> int:
        return int(self.launches(worker)[-1]["pid"])


def events(start: int, stop: int) -> list[dict[str, str]]:
    return [
        {"message_id": f"m{i}", "campaign_id": f"c{i % 4}", "provider": "p", "to": f"+1415{i:07d}", "body": "hi"}
        for i in range(start, stop)
    ]


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def consumed(port: int) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = re.search(r"^sms_messages_consumed_total (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


async def setup(bootstrap: str, provider: CountingProvider, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    config = service_config(bootstrap, provider.url, observability={"http_port": port})
    kafka = config["kafka"]
    await create_topics(
        bootstrap, {kafka["input_topic"]: PARTITIONS, kafka["status_topic"]: PARTITIONS, kafka["dlq_topic"]: 1}
    )
    return config, kafka


async def committed_to_end(bootstrap: str, kafka: dict[str, Any]) -> tuple[dict[int, int | None], dict[int, int]]:
    committed = await committed_offsets(bootstrap, kafka["group_id"], kafka["input_topic"], PARTITIONS)
    ends = await end_offsets(bootstrap, kafka["input_topic"], PARTITIONS)
    return committed, ends


@asynccontextmanager
async def running_workers(kafka_bootstrap: str, tmp_path: Path, provider: CountingProvider, port: int):
    """Start `provider` and the service as two workers (operations ports `port` and `port + 1`; 0: any);
    yields the service and its Kafka settings; kills what is still running and stops the provider at the end."""
    await provider.start()
    config, kafka = await setup(kafka_bootstrap, provider, port)
    service = Workers(config, tmp_path, workers=2)
    try:
        service.start()
        yield service, kafka
    finally:
        if service.alive():
            service.kill()
        await provider.stop()


def mapped_packages(pid: int) -> set[str]:
    """The installed packages whose files (native modules) process `pid` has mapped."""
    return set(re.findall(r"site-packages/(\w+)", Path(f"/proc/{pid}/maps").read_text()))


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


async def test_two_workers_share_the_partitions_and_stop_cleanly(kafka_bootstrap, tmp_path):
    provider = CountingProvider()
    port = free_ports(2)
    async with running_workers(kafka_bootstrap, tmp_path, provider, port) as (service, kafka):
        await wait_for(lambda: _all(ready(port), ready(port + 1)), timeout=60, interval=0.2, what="both workers ready")
        supervisor = service.proc.pid  # the process started, after it checked the configuration and exec'd
        libraries = mapped_packages(supervisor)
        await produce(kafka_bootstrap, kafka["input_topic"], events(0, 2000), key_of="message_id")
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], 2000, timeout=60, distinct="message_id")
        counts = [await consumed(port), await consumed(port + 1)]
        pids = [service.pid(0), service.pid(1)]
        started = time.monotonic()
        code = await asyncio.to_thread(service.terminate, 40)
        elapsed = time.monotonic() - started

    assert {s["message_id"] for s in statuses} == {f"m{i}" for i in range(2000)}
    assert {s["status"] for s in statuses} == {"sent"}
    assert all(n > 0 for n in counts), f"messages consumed per worker: {counts}"
    assert sum(counts) >= 2000
    assert code == 0
    assert elapsed < 30, f"stopping took {elapsed:.1f} s"
    assert all(gone(pid) for pid in pids), "a worker outlived the supervisor"
    committed, ends = await committed_to_end(kafka_bootstrap, kafka)
    assert committed == ends
    assert sum(ends.values()) == 2000
    logged = service.events()
    assert sorted((e["worker"], e["code"]) for e in logged if e["event"] == "worker stopped") == [(0, 0), (1, 0)]
    for worker in (0, 1):
        own = {e["event"] for e in logged if e.get("worker") == worker}
        assert {"service started", "final commit", "service stopped"} <= own, own
        ports = [e["port"] for e in logged if e.get("worker") == worker and e["event"] == "operations server listening"]
        assert ports == [port + worker]
    assert len(service.launches(0)) == len(service.launches(1)) == 1
    assert [e["pid"] for e in logged if e["event"] == "starting workers"] == [supervisor]
    # The supervisor loaded none of the service's native modules (configuration models, event loop, Kafka).
    assert not {"pydantic_core", "uvloop", "aiokafka"} & libraries, libraries


async def test_a_killed_worker_is_restarted_and_nothing_is_lost(kafka_bootstrap, tmp_path):
    provider = CountingProvider(latency=0.1)
    port = free_ports(2)
    async with running_workers(kafka_bootstrap, tmp_path, provider, port) as (service, kafka):
        await wait_for(lambda: _all(ready(port), ready(port + 1)), timeout=60, interval=0.2, what="both workers ready")
        await produce(kafka_bootstrap, kafka["input_topic"], events(0, 2000), key_of="message_id")
        await wait_for(lambda: len(provider.sends) > 300, timeout=60, what="flow")
        killed = service.pid(1)
        os.kill(killed, signal.SIGKILL)
        await wait_for(lambda: len(service.launches(1)) == 2, timeout=30, interval=0.2, what="worker 1 restarted")
        assert service.pid(1) != killed
        await wait_for(lambda: ready(port + 1), timeout=60, interval=0.2, what="the restarted worker ready")
        await produce(kafka_bootstrap, kafka["input_topic"], events(2000, 3000), key_of="message_id")
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], 3000, timeout=90, distinct="message_id")
        restarted_consumed = await consumed(port + 1)
        code = await asyncio.to_thread(service.terminate, 40)

    assert {s["message_id"] for s in statuses} == {f"m{i}" for i in range(3000)}
    assert {s["status"] for s in statuses} == {"sent"}
    assert restarted_consumed > 0
    exits = [e for e in service.events() if e["event"] == "worker exited unexpectedly: restarting it"]
    assert [(e["worker"], e["code"], e["signal"], e["restart_in_s"]) for e in exits] == [(1, -9, "SIGKILL", 1.0)]
    assert len(service.launches(0)) == 1
    assert code == 0
    committed, ends = await committed_to_end(kafka_bootstrap, kafka)
    assert committed == ends


async def test_workers_die_with_a_killed_supervisor(kafka_bootstrap, tmp_path):
    async with running_workers(kafka_bootstrap, tmp_path, CountingProvider(), 0) as (service, _):
        await wait_for(
            lambda: {e.get("worker") for e in service.events() if e["event"] == "service started"} == {0, 1},
            timeout=60,
            interval=0.2,
            what="both workers started",
        )
        pids = [service.pid(0), service.pid(1)]
        service.kill()
        await wait_for(lambda: all(gone(pid) for pid in pids), timeout=5, what="the workers gone")


def test_an_invalid_configuration_fails_at_start_with_its_path_and_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"providers": {"p": {"url": "ftp://x", "payload": {"to": "$$To", "b": "$$Body"}}}}))
    run = [sys.executable, "-m", "consumer", "run", str(path)]
    result = subprocess.run([*run, "--workers", "2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"invalid configuration {path}:" in result.stderr
    assert "providers.p.url: must start with http:// or https://" in result.stderr
    assert "worker started" not in result.stderr + result.stdout
    result = subprocess.run([*run, "--workers", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--workers: must be at least 1" in result.stderr


def test_workers_that_cannot_start_stop_the_service_with_exit_2(tmp_path):
    config = service_config("127.0.0.1:1", "http://127.0.0.1:9/send", observability={"http_port": 0})
    path = tmp_path / "-looks-like-an-option.yaml"
    path.write_text(yaml.safe_dump(config))
    run = [sys.executable, "-m", "consumer", "run", "--workers", "2", "--", path.name]
    result = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    logged = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [e["event"] for e in logged if "worker" not in e or e["event"].startswith("worker ")]
    assert events.count("worker could not start: stopping the others") == 1
    assert "worker failed while stopping" not in events, events
    assert [e["code"] for e in logged if e["event"] == "workers stopped"] == [2]


async def _all(*checks: Any) -> bool:
    return all(await asyncio.gather(*checks))
