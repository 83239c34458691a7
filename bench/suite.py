"""The scenarios: each one starts its system under test in a process of its own, feeds it, waits for every
status, and measures it.

Figures of a scenario (all from broker timestamps, see `bench.workload`):

- messages/s: messages / (last status acknowledged - first input record in). For the backlog scenario the clock
  starts when the provider comes back up (the drain rate).
- p50/p99 latency: `created_at` (the input record's append time) -> the status record's append time.
- peak RSS: the process's high-water mark (`VmHWM`); CPU: user + system seconds of that process alone while it
  worked, per 1,000 messages. With `--workers N` the service's figures are the sums over its process tree
  (the supervisor and the workers; peak RSS is the sum of their high-water marks).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench.ceiling_http import write_bodies
from bench.configs import PROVIDER, ProviderShape, provider_section, service_config
from bench.procs import ROOT, Child, Usage
from bench.workload import (
    EndWatch,
    Produced,
    Statuses,
    Topics,
    create_topics,
    events,
    produce_backlog,
    produce_burst,
    produce_paced,
    read_statuses,
)
from consumer.ports import free_ports

MB = 1024 * 1024


@dataclass
class Options:
    """What to run, and how big."""

    bootstrap: str
    workdir: Path
    smoke: bool = False
    events: int = 200_000
    """Events of the batching scenarios (a), (b) and of ceiling K."""
    single_events: int = 30_000
    """Events of scenario (c), one request per message."""
    latency_events: int = 20_000
    """Events of scenario (d), one request per message to a slow provider."""
    latency_ms: float = 50.0
    backlog: int = 1_000_000
    outage_s: float = 60.0
    linger_rate: float = 2_000.0
    linger_seconds: float = 10.0
    partitions: int = 6
    concurrency: int = 64
    only: frozenset[str] = frozenset({"a", "b", "c", "d", "e", "linger"})
    profile: str | None = None
    """A scenario to run once more under pyinstrument (its figures are the profiler's, not the service's)."""
    parallel: bool = False
    max_pending: int | None = None
    """The service's `pipeline.max_pending_messages`; None: its default."""
    service_root: Path | None = None
    """Run the service from this checkout (its `consumer` and `schemas` packages) instead of this one's."""
    workers: int = 1
    """The service's worker processes (`sms-consumer run --workers N`)."""

    @classmethod
    def for_smoke(cls, bootstrap: str, workdir: Path) -> Options:
        return cls(
            bootstrap=bootstrap,
            workdir=workdir,
            smoke=True,
            events=3_000,
            single_events=600,
            latency_events=400,
            backlog=5_000,
            outage_s=2.0,
            linger_rate=500.0,
            linger_seconds=2.0,
            parallel=True,
        )


@dataclass
class Row:
    """The figures of one system under test in one scenario."""

    key: str
    title: str
    kind: str
    """`service`, `ceiling-kafka` or `ceiling-http`."""
    messages: int
    msg_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    cpu_s_per_1k: float | None = None
    seconds: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.error is None and all(self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["correct"] = self.correct
        return out


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


def _topics(key: str, run: str, partitions: int) -> Topics:
    base = f"bench-{key}-{run}"
    return Topics(f"{base}.in", f"{base}.status", f"{base}.dlq", partitions)


async def _provider(workdir: Path, name: str, latency_ms: float = 0.0, port: int | None = None) -> tuple[Child, str]:
    port = port or free_ports()
    args = [sys.executable, "-m", "bench.provider", "--port", str(port), "--latency-ms", str(latency_ms)]
    child = await Child.start(name, args, workdir / f"{name}.log")
    await child.wait_for_line("listening", 30)
    return child, f"http://127.0.0.1:{port}"


async def _provider_stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as response:
        return dict(await response.json(content_type=None))


async def _await_statuses(
    opts: Options, topics: Topics, child: Child, expected: int, timeout: float, run: str
) -> tuple[int, float]:
    """Wait until every message of `run` has its status, sampling the child's memory; returns the count of
    status records and how long it took.

    Counting records is not enough: a rebalance may have sent some messages twice (at-least-once), so once
    `expected` records are there the topic is read to see whether every message of the run has its status,
    and the wait goes on for the ones still missing. The caller reads the topic once more after the process
    stopped (statuses published while it stopped count too); both reads come after the last status, so the
    figures (broker timestamps) do not include them."""
    started = time.monotonic()
    deadline = started + timeout
    target = expected
    async with EndWatch(opts.bootstrap, topics.status, topics.partitions) as watch:

        def sample() -> None:
            child.usage()
            child.check_alive()

        while True:
            seen = await watch.wait_for(target, max(0.0, deadline - time.monotonic()), on_poll=sample)
            if seen < target or time.monotonic() > deadline:
                break
            statuses = await read_statuses(opts.bootstrap, topics.status, topics.partitions, run, expected)
            if statuses.missing == 0:
                break
            target = statuses.records + statuses.missing
    return seen, time.monotonic() - started


def _fill(row: Row, statuses: Statuses, start_ms: int | None, before: Usage | None, after: Usage | None) -> None:
    """The figures of a row from what the status topic holds and the process's usage."""
    n = statuses.expected
    if start_ms is not None and statuses.last_ms is not None and statuses.last_ms > start_ms:
        row.seconds = (statuses.last_ms - start_ms) / 1000
        row.msg_per_s = n / row.seconds
    row.p50_ms = statuses.percentile(0.50)
    row.p99_ms = statuses.percentile(0.99)
    if before is not None and after is not None and n:
        row.cpu_s_per_1k = (after.cpu_s - before.cpu_s) / n * 1000
    if after is not None:
        row.peak_rss_mb = after.peak_rss_bytes / MB
    row.checks["every message has a status"] = statuses.missing == 0
    row.checks["no message has two statuses"] = statuses.duplicates == 0
    row.details.update(
        status_records=statuses.records,
        distinct_messages=statuses.distinct,
        missing=statuses.missing,
        duplicates=statuses.duplicates,
        by_status=dict(statuses.by_status),
    )


# -- ceiling K -------------------------------------------------------------------------------------------------


async def ceiling_kafka(opts: Options, api: str = "send") -> Row:
    """A minimal aiokafka loop over the same events: the most the Kafka side allows (`api`: see
    `bench.ceiling_kafka`)."""
    n = opts.events
    if api == "send":
        row = Row("K", "ceiling K: aiokafka consume -> status", "ceiling-kafka", n)
    else:
        row = Row("K(batch)", "ceiling K, status batches (send_batch)", "ceiling-kafka", n)
    run = _run_id()
    topics = _topics("k", run, opts.partitions)
    workdir = opts.workdir / row.key
    await create_topics(opts.bootstrap, topics)
    values = events(run, n, PROVIDER)
    args = [
        sys.executable,
        "-m",
        "bench.ceiling_kafka",
        "--bootstrap",
        opts.bootstrap,
        "--input",
        topics.input,
        "--status",
        topics.status,
        "--group",
        f"bench-k-{run}",
        "--api",
        api,
    ]
    child = await Child.start("ceiling-kafka", args, workdir / "ceiling-kafka.log")
    try:
        await child.wait_for_line("ready", 60)
        before = child.usage()
        produced = await produce_burst(opts.bootstrap, topics.input, values, topics.partitions)
        await _await_statuses(opts, topics, child, n, 60 + n / 1000, run)
        after = child.usage()
    finally:
        code = await child.stop()
    statuses = await read_statuses(opts.bootstrap, topics.status, topics.partitions, run, n)
    _fill(row, statuses, produced.first_ms, before, after)
    row.checks["stopped cleanly"] = code == 0
    row.details["feed_msg_per_s"] = produced.rate
    return row


# -- ceiling H -------------------------------------------------------------------------------------------------


def render_bodies(shape: ProviderShape, base_url: str, run: str, n: int) -> list[tuple[int, bytes]]:
    """The request bodies the service sends for the run's events, batched as the service batches a burst."""
    from consumer.templates import CompiledProvider, message_values
    from schemas.config import ProviderConfig
    from schemas.events import SendRequest

    provider = CompiledProvider(PROVIDER, ProviderConfig.model_validate(provider_section(shape, base_url)))
    open_batches: dict[tuple[str, bytes], list[Any]] = {}
    bodies: list[tuple[int, bytes]] = []
    for value in events(run, n, PROVIDER):
        request = SendRequest.model_validate_json(value)
        prepared = provider.prepare(message_values(request))
        if not provider.batching:
            assert prepared.request is not None and prepared.request.body is not None
            bodies.append((1, prepared.request.body))
            continue
        key = (request.campaign_id, prepared.group)
        batch = open_batches.setdefault(key, [])
        batch.append(prepared)
        if len(batch) >= provider.batch_size:
            bodies.append((len(batch), provider.render_batch(batch).body or b""))
            del open_batches[key]
    for batch in open_batches.values():
        bodies.append((len(batch), provider.render_batch(batch).body or b""))
    return bodies


async def ceiling_http(opts: Options, key: str, shape: ProviderShape, n: int, latency_ms: float = 0.0) -> Row:
    """A minimal aiohttp client posting the scenario's request bodies at its concurrency: the most HTTP allows."""
    what = f"batches of {shape.batch_size}" if shape.batch_size else "one per message"
    row = Row(f"H({key})", f"ceiling H({key}): aiohttp, {what}, x{shape.concurrency}", "ceiling-http", n)
    workdir = opts.workdir / f"H-{key}"
    provider, url = await _provider(workdir, "provider", latency_ms)
    try:
        bodies = await asyncio.to_thread(render_bodies, shape, url, _run_id(), n)
        path = workdir / "bodies.bin"
        write_bodies(path, bodies)
        args = [
            sys.executable,
            "-m",
            "bench.ceiling_http",
            "--bodies",
            str(path),
            "--url",
            url + shape.path,
            "--concurrency",
            str(shape.concurrency),
        ]
        child = await Child.start("ceiling-http", args, workdir / "ceiling-http.log")
        code = await asyncio.wait_for(child.process.wait(), 60 + n / 100)
        stats = await _provider_stats(url)
        path.unlink()
    finally:
        await provider.stop()
    lines = [line for line in child.log_tail(100_000).splitlines() if line.startswith("RESULT ")]
    if code != 0 or not lines:
        raise RuntimeError(f"ceiling H exited with {code}; log {child.log_path}:\n{child.log_tail()}")
    result = orjson.loads(lines[-1].removeprefix("RESULT "))
    row.seconds = result["seconds"]
    row.msg_per_s = result["messages"] / result["seconds"]
    row.cpu_s_per_1k = result["cpu_s"] / result["messages"] * 1000
    row.peak_rss_mb = result["peak_rss_bytes"] / MB
    row.checks["every request accepted"] = result["failures"] == 0 and result["messages"] == n
    row.details.update(requests=result["requests"], provider=stats)
    return row


# -- the service -----------------------------------------------------------------------------------------------


@dataclass
class Feed:
    """How a scenario's events reach the service."""

    kind: str
    """`burst`: as fast as possible once the service is ready; `paced`: at `rate`; `backlog`: queued before the
    service starts, with the provider down for `outage_s`."""
    rate: float = 0.0
    outage_s: float = 0.0


async def service(
    opts: Options,
    key: str,
    title: str,
    shape: ProviderShape,
    n: int,
    feed: Feed,
    *,
    latency_ms: float = 0.0,
    linger_ms: int = 100,
    profile: Path | None = None,
) -> Row:
    """Run `sms-consumer run` on a scenario and measure it."""
    row = Row(key, title, "service", n)
    run = _run_id()
    topics = _topics(key.replace("(", "").replace(")", ""), run, opts.partitions)
    workdir = opts.workdir / key
    workdir.mkdir(parents=True, exist_ok=True)
    await create_topics(opts.bootstrap, topics)
    provider_port = free_ports()
    provider_url = f"http://127.0.0.1:{provider_port}"
    provider: Child | None = None
    child: Child | None = None
    group = f"bench-{key}-{run}"
    produced = Produced()
    up_ms: int | None = None
    values = events(run, n, PROVIDER) if feed.kind != "backlog" else []
    try:
        if feed.kind == "backlog":
            produced = await produce_backlog(opts.bootstrap, topics.input, run, n, PROVIDER, topics.partitions)
            row.details["backlog_produce_s"] = round(produced.seconds, 2)
        else:
            provider, _ = await _provider(workdir, "provider", latency_ms, provider_port)
        ops_port = free_ports(opts.workers)  # worker I serves on ops_port + I
        if opts.workers > 1:
            # The scenario's concurrency is the service's, shared by its workers (as the ceiling's is by one).
            shape = replace(shape, concurrency=max(1, -(-shape.concurrency // opts.workers)))
        config = service_config(
            bootstrap=opts.bootstrap,
            topics=topics,
            group=group,
            shape=shape,
            provider_url=provider_url,
            ops_port=ops_port,
            linger_ms=linger_ms,
            max_pending=opts.max_pending,
        )
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [sys.executable, "-m", "consumer", "run", str(config_path)]
        if opts.workers != 1:
            command += ["--workers", str(opts.workers)]
        if profile is not None:
            command = [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(profile), "-m", *command[2:]]
        root = opts.service_root
        env = {"PYTHONPATH": str(root)} if root is not None else None
        child = await Child.start("service", command, workdir / "service.log", env, cwd=root or ROOT)
        for worker in range(opts.workers):
            await child.wait_http_ok(f"http://127.0.0.1:{ops_port + worker}/readyz", 60)
        before = child.usage()
        if feed.kind == "burst":
            produced = await produce_burst(opts.bootstrap, topics.input, values, topics.partitions)
            timeout = 60 + n / (1000 if shape.batch_size else 200)
        elif feed.kind == "paced":
            produced = await produce_paced(opts.bootstrap, topics.input, values, feed.rate, topics.partitions)
            timeout = 60.0
        else:
            await _sleep_sampling(child, feed.outage_s)
            provider, _ = await _provider(workdir, "provider", latency_ms, provider_port)
            up_ms = int(time.time() * 1000)
            timeout = 120 + n / 1000
        await _await_statuses(opts, topics, child, n, timeout, run)
        after = child.usage()
        stats = await _provider_stats(provider_url) if provider is not None else {}
    finally:
        code = await child.stop(signal.SIGTERM) if child is not None else None
        if provider is not None:
            await provider.stop()
    statuses = await read_statuses(opts.bootstrap, topics.status, topics.partitions, run, n)
    _fill(row, statuses, up_ms if feed.kind == "backlog" else produced.first_ms, before, after)
    if child.peak_rss:
        row.peak_rss_mb = max(row.peak_rss_mb or 0.0, child.peak_rss / MB)
    row.checks["every status is sent"] = statuses.by_status.get("sent", 0) == statuses.records - statuses.unknown
    row.checks["provider received every message"] = stats.get("messages", 0) >= n
    row.checks["service stopped cleanly"] = code == 0
    row.checks["offsets committed to the end"] = await _committed_to_end(opts.bootstrap, group, topics)
    row.details.update(provider=stats, service_log=str(child.log_path))
    if feed.kind != "backlog":
        row.details["feed_msg_per_s"] = round(produced.rate)
    if up_ms is not None and statuses.first_ms is not None and statuses.last_ms is not None:
        row.details["drain_after_up_s"] = round((statuses.last_ms - up_ms) / 1000, 2)
        # Until the first status the service waits for its circuit breaker to let a probe through.
        row.details["first_status_after_up_s"] = round((statuses.first_ms - up_ms) / 1000, 2)
        row.details["drain_rate_msg_per_s"] = round(n / max(0.001, (statuses.last_ms - statuses.first_ms) / 1000))
        row.details["outage_s"] = feed.outage_s
    return row


async def _sleep_sampling(child: Child, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        child.usage()
        child.check_alive()
        await asyncio.sleep(min(0.25, left))


async def _committed_to_end(bootstrap: str, group: str, topics: Topics) -> bool:
    from consumer.testing import committed_offsets, end_offsets

    committed = await committed_offsets(bootstrap, group, topics.input, topics.partitions)
    ends = await end_offsets(bootstrap, topics.input, topics.partitions)
    return all(committed.get(p) == end or (end == 0 and committed.get(p) is None) for p, end in ends.items())


# -- the suite -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One scenario through the service, and the ceiling H it is compared with (if any)."""

    key: str
    title: str
    shape: ProviderShape
    messages: int
    feed: Feed
    latency_ms: float = 0.0
    http_ceiling: bool = True


def service_scenarios(opts: Options) -> list[Scenario]:
    c, lat = opts.concurrency, opts.latency_ms
    batch1000, batch100, single = ProviderShape(1000, 16), ProviderShape(100, 16), ProviderShape(None, c)
    burst = Feed("burst")
    return [
        Scenario("a", "(a) JSON batches of 1000", batch1000, opts.events, burst),
        Scenario("b", "(b) JSON batches of 100", batch100, opts.events, burst),
        Scenario("c", f"(c) one request per message, x{c}", single, opts.single_events, burst),
        Scenario("d", f"(d) provider latency {lat:g} ms, x{c}", single, opts.latency_events, burst, latency_ms=lat),
        Scenario(
            "linger",
            f"linger 100 ms at {opts.linger_rate:,.0f} msg/s",
            batch1000,
            round(opts.linger_rate * opts.linger_seconds),
            Feed("paced", rate=opts.linger_rate),
            http_ceiling=False,
        ),
        Scenario(
            "e",
            f"(e) backlog {opts.backlog:,}, provider down {opts.outage_s:g} s",
            # Retries must outlast the outage: the breaker keeps attempts rare while the provider is down.
            ProviderShape(1000, 16, max_attempts=50),
            opts.backlog,
            Feed("backlog", outage_s=opts.outage_s),
            http_ceiling=False,
        ),
    ]


def scenarios(opts: Options) -> list[tuple[str, Callable[[], Awaitable[Row]]]]:
    """Everything to run, in order: the Kafka ceilings first, then each scenario after its ceiling H."""
    plan: list[tuple[str, Callable[[], Awaitable[Row]]]] = [
        ("K", partial(ceiling_kafka, opts)),
        ("K(batch)", partial(ceiling_kafka, opts, "batch")),
    ]
    for s in service_scenarios(opts):
        if s.key not in opts.only:
            continue
        if s.http_ceiling:
            plan.append((f"H({s.key})", partial(ceiling_http, opts, s.key, s.shape, s.messages, s.latency_ms)))
        plan.append(
            (s.key, partial(service, opts, s.key, s.title, s.shape, s.messages, s.feed, latency_ms=s.latency_ms))
        )
    for s in service_scenarios(opts):
        if s.key == opts.profile:
            key, path = f"profile-{s.key}", opts.workdir / f"profile-{s.key}.pyisession"
            title = f"{s.title} under pyinstrument"
            job = partial(service, opts, key, title, s.shape, s.messages, s.feed, latency_ms=s.latency_ms, profile=path)
            plan.append((key, job))
    return plan


async def run_suite(opts: Options, progress: Callable[[str], None] = print) -> list[Row]:
    """Run every scenario; a scenario that fails is reported as such and the others still run."""
    plan = scenarios(opts)

    async def one(key: str, job: Callable[[], Awaitable[Row]]) -> Row:
        started = time.monotonic()
        progress(f"[{key}] running")
        try:
            row = await job()
        except Exception as exc:  # reported in the table and the JSON; the other scenarios still run
            row = Row(key, key, "error", 0, error=f"{type(exc).__name__}: {exc}")
        progress(f"[{key}] done in {time.monotonic() - started:.1f} s" + (f": {row.error}" if row.error else ""))
        return row

    if opts.parallel:
        return list(await asyncio.gather(*(one(key, job) for key, job in plan)))
    rows = []
    for key, job in plan:
        rows.append(await one(key, job))
        await asyncio.sleep(0.5)  # let the broker settle between scenarios
    return rows
