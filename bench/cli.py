"""`python -m bench`: run the benchmark suite, print the table and the targets, write the JSON results.

Without `--bootstrap` a fresh one-broker Apache Kafka is started for the run (so results do not depend on what
an older broker holds) and stopped at the end. `--smoke` runs every scenario tiny and side by side in seconds,
checking correctness only. The exit code is 1 when a correctness check failed (a message without a status or
with two, offsets left uncommitted, a process that did not stop cleanly), 0 otherwise: a missed performance
target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.procs import ROOT
from bench.report import document, notes, problems, table, targets
from bench.suite import Options, run_suite
from consumer import loop

SCENARIOS = ("a", "b", "c", "d", "e", "linger")
NOISE = (
    "Figures are only as quiet as the machine: other processes on these cores (see the load average) make "
    "them noisy. Compare runs made on an idle machine."
)


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    found.add_argument("--bootstrap", help="use this Kafka cluster instead of starting a fresh local broker")
    found.add_argument("--smoke", action="store_true", help="tiny counts, scenarios side by side, correctness only")
    found.add_argument("--only", help=f"comma-separated scenarios to run ({', '.join(SCENARIOS)}); default all")
    found.add_argument("--events", type=int, help="events of (a), (b) and ceiling K (default 200,000)")
    found.add_argument("--single-events", type=int, help="events of (c) (default 30,000)")
    found.add_argument("--latency-events", type=int, help="events of (d) (default 20,000)")
    found.add_argument("--latency-ms", type=float, help="provider latency of (d) (default 50)")
    found.add_argument("--concurrency", type=int, help="provider concurrency of (c) and (d) (default 64)")
    found.add_argument("--backlog", type=int, help="queued events of (e) (default 1,000,000)")
    found.add_argument("--outage-s", type=float, help="how long the provider is down in (e) (default 60)")
    found.add_argument("--linger-rate", type=float, help="msg/s of the linger scenario (default 2,000)")
    found.add_argument("--linger-seconds", type=float, help="duration of the linger scenario (default 10)")
    found.add_argument("--partitions", type=int, help="partitions of the input and status topics (default 6)")
    found.add_argument("--max-pending", type=int, help="the service's pipeline.max_pending_messages (default its own)")
    found.add_argument(
        "--workers", type=int, help="the service's worker processes (`run --workers N`, default 1); CPU, RSS: their sum"
    )
    found.add_argument(
        "--profile",
        nargs="?",
        const="a",
        choices=SCENARIOS,
        help="also run this scenario (default a) under pyinstrument and save the profile",
    )
    found.add_argument("--parallel", action="store_true", help="run scenarios side by side (default with --smoke)")
    found.add_argument(
        "--service-root", type=Path, help="run the service from this checkout (e.g. another revision) instead"
    )
    found.add_argument(
        "--results-dir", type=Path, default=ROOT / "bench" / "results", help="where results go (bench/results)"
    )
    return found


def options(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Options:
    opts = Options.for_smoke(bootstrap, workdir) if args.smoke else Options(bootstrap=bootstrap, workdir=workdir)
    for name in (
        "events",
        "single_events",
        "latency_events",
        "latency_ms",
        "concurrency",
        "backlog",
        "outage_s",
        "linger_rate",
        "linger_seconds",
        "partitions",
        "max_pending",
        "workers",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(opts, name, value)
    if args.only:
        chosen = frozenset(s.strip() for s in args.only.split(",") if s.strip())
        unknown = chosen - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
        opts.only = chosen
    if opts.workers < 1:
        raise SystemExit(f"--workers must be at least 1, not {opts.workers}")
    opts.profile = args.profile
    if opts.profile and opts.workers > 1:
        raise SystemExit("--profile profiles one service process; it cannot be used with --workers")
    if opts.profile and importlib.util.find_spec("pyinstrument") is None:
        raise SystemExit("--profile needs pyinstrument (in the test extra): .venv/bin/pip install -e .[test]")
    opts.service_root = args.service_root.resolve() if args.service_root else None
    opts.parallel = args.parallel or args.smoke
    return opts


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _meta(bootstrap: str, fresh: bool) -> dict[str, Any]:
    try:
        import aiokafka.record._crecords  # noqa: F401

        crecords = True
    except ImportError:
        crecords = False
    return {
        "started_at": datetime.now(UTC).isoformat(),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "broker": "fresh local broker" if fresh else bootstrap,
        "aiokafka_c_extension": crecords,
        "uvloop": loop.uvloop_available(),
    }


def _render_profile(session: Path) -> list[Path]:
    """Text reports of a pyinstrument session: the call tree of our code, and the slowest functions by self time."""
    out = []
    for suffix, extra in ((".txt", []), (".flat.txt", ["-p", "flat=true", "--show-all"])):
        target = session.with_suffix(suffix)
        command = [sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text", "-o", str(target)]
        if subprocess.run([*command, *extra], cwd=ROOT, capture_output=True).returncode == 0:
            out.append(target)
    return out


def execute(args: argparse.Namespace) -> tuple[int, dict[str, Any], Path]:
    """Run the suite as asked; returns the exit code, the JSON document and where it was written."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    workdir = results_dir / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from consumer.devbroker import KafkaCluster

        print("starting a fresh local Kafka broker...", flush=True)
        cluster = KafkaCluster(brokers=1, heap="1g")
        cluster.start()
        bootstrap = cluster.bootstrap_servers
    try:
        opts = options(args, bootstrap, workdir)
        meta = _meta(bootstrap, cluster is not None)
        started = time.monotonic()
        rows = loop.run(run_suite(opts, progress=lambda line: print(line, flush=True)))
        meta["seconds"] = round(time.monotonic() - started, 1)
        meta["load_average_after"] = os.getloadavg()
    finally:
        if cluster is not None:
            cluster.stop()
    doc = document(rows, opts, meta)
    for session in sorted(workdir.glob("profile-*.pyisession")):
        doc.setdefault("profile", []).extend(str(p) for p in _render_profile(session))
    path = results_dir / f"{stamp}.json"
    path.write_bytes(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2))

    print()
    mode = "smoke run (correctness only)" if opts.smoke else "benchmark"
    load = ", ".join(f"{x:.2f}" for x in meta["load_average_before"])
    print(f"sms-consumer {mode}, {meta['started_at']}, broker: {meta['broker']}, load average before: {load}")
    print(table(rows))
    for line in notes(rows):
        print("  " + line)
    print()
    print("targets")
    for target in targets(rows, opts):
        print(f"  {target.verdict:<5}{target.name}: {target.measured}")
    found = problems(rows)
    if found:
        print()
        print("correctness problems")
        for line in found:
            print("  " + line)
    print()
    print(NOISE)
    print(f"results: {path}")
    for report in doc.get("profile", []):
        print(f"profile: {report}")
    return (1 if found else 0), doc, path


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code, _, _ = execute(args)
    return code
