"""The table, the targets and the JSON document of a benchmark run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.suite import Options, Row


@dataclass(frozen=True, slots=True)
class Target:
    """One performance target: PASS, FAIL, or not evaluated (`passed` None) with the reason."""

    name: str
    passed: bool | None
    measured: str

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else ("FAIL" if self.passed is False else "n/a")


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return value / ceiling


def ratios(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """For each row: throughput and CPU per message relative to ceiling K, and throughput relative to its H."""
    by_key = {r.key: r for r in rows}
    k = by_key.get("K")
    out: dict[str, dict[str, float | None]] = {}
    for row in rows:
        h = by_key.get(f"H({row.key})") if row.kind == "service" else None
        out[row.key] = {
            "throughput_vs_K": _ratio(row.msg_per_s, k.msg_per_s if k else None),
            "throughput_vs_H": _ratio(row.msg_per_s, h.msg_per_s if h else None),
            "cpu_vs_K": _ratio(row.cpu_s_per_1k, k.cpu_s_per_1k if k else None),
        }
    return out


def targets(rows: list[Row], opts: Options) -> list[Target]:
    """The issue's targets, judged on this run's figures."""
    by_key = {r.key: r for r in rows}
    rel = ratios(rows)
    found: list[Target] = []

    def usable(*keys: str) -> bool:
        return all(k in by_key and by_key[k].error is None for k in keys)

    if "a" in opts.only:
        if usable("a", "K"):
            vs_k = rel["a"]["throughput_vs_K"]
            found.append(Target("(a) >= 0.6 x ceiling K", vs_k is not None and vs_k >= 0.6, _x(vs_k)))
            rate = by_key["a"].msg_per_s
            found.append(Target("(a) >= 50,000 msg/s", rate is not None and rate >= 50_000, _n(rate, "msg/s")))
        else:
            found.append(Target("(a) throughput", None, "did not run"))
    if "c" in opts.only:
        if usable("c", "H(c)"):
            vs_h = rel["c"]["throughput_vs_H"]
            found.append(Target("(c) >= 0.7 x ceiling H", vs_h is not None and vs_h >= 0.7, _x(vs_h)))
        else:
            found.append(Target("(c) throughput", None, "did not run"))
    if "d" in opts.only:
        bound = opts.concurrency / (opts.latency_ms / 1000)
        if usable("d"):
            rate = by_key["d"].msg_per_s
            found.append(
                Target(
                    f"(d) >= 80% of concurrency/latency ({bound:,.0f} msg/s)",
                    rate is not None and rate >= 0.8 * bound,
                    f"{_n(rate, 'msg/s')} = {_pct(rate, bound)}",
                )
            )
        else:
            found.append(Target("(d) throughput", None, "did not run"))
    if "e" in opts.only:
        if usable("e"):
            e = by_key["e"]
            rss = e.peak_rss_mb
            found.append(Target("(e) peak RSS < 300 MB", rss is not None and rss < 300, _n(rss, "MB")))
            lost = e.details.get("missing")
            # Loss is a message without a status; a duplicate (a rebalance re-reads unfinished work) is not
            # loss, and fails the run's correctness check on its own.
            twice = e.details.get("duplicates")
            found.append(
                Target("(e) no loss: every message sent", lost == 0, f"{lost} missing, {twice} twice; {_statuses(e)}")
            )
        else:
            found.append(Target("(e) backlog drain", None, "did not run"))
    if "linger" in opts.only:
        if usable("linger"):
            p99 = by_key["linger"].p99_ms
            found.append(Target("linger p99 < 250 ms", p99 is not None and p99 < 250, _n(p99, "ms")))
        else:
            found.append(Target("linger latency", None, "did not run"))
    if opts.smoke:
        # Smoke runs are tiny and run scenarios side by side: their timings mean nothing.
        found = [Target(t.name, None, "not judged in --smoke") for t in found]
    return found


def _n(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.0f} {unit}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} x"


def _pct(value: float | None, bound: float) -> str:
    return "-" if value is None else f"{value / bound:.0%}"


def _statuses(row: Row) -> str:
    by_status = row.details.get("by_status") or {}
    return ", ".join(f"{k} {v:,}" for k, v in sorted(by_status.items())) or "no statuses"


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    rel = ratios(rows)
    head = (
        f"{'scenario':<46}{'msg/s':>10}{'x K':>7}{'x H':>7}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'RSS MB':>8}{'CPU s/1k':>10}{'CPU x K':>9}  ok"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        r = rel[row.key]
        ok = "yes" if row.correct else "NO"
        lines.append(
            f"{row.title[:45]:<46}{_cell(row.msg_per_s, ',.0f'):>10}{_cell(r['throughput_vs_K'], '.2f'):>7}"
            f"{_cell(r['throughput_vs_H'], '.2f'):>7}{_cell(row.p50_ms, ',.0f'):>9}{_cell(row.p99_ms, ',.0f'):>9}"
            f"{_cell(row.peak_rss_mb, '.0f'):>8}{_cell(row.cpu_s_per_1k, '.3f'):>10}"
            f"{_cell(r['cpu_vs_K'], '.1f'):>9}  {ok}"
        )
    return "\n".join(lines)


def problems(rows: list[Row]) -> list[str]:
    """Correctness failures, in words."""
    out = []
    for row in rows:
        if row.error:
            out.append(f"{row.key}: {row.error}")
        for check, passed in row.checks.items():
            if not passed:
                out.append(f"{row.key}: {check}: no ({_statuses(row)}; missing {row.details.get('missing', '?')})")
    return out


def notes(rows: list[Row]) -> list[str]:
    """Details worth a line under the table."""
    out = []
    for row in rows:
        feed = row.details.get("feed_msg_per_s")
        if row.kind == "ceiling-kafka" and feed and row.msg_per_s and row.msg_per_s > 0.8 * feed:
            out.append(f"{row.key}: within 80% of the rate events were produced at ({feed:,.0f}/s): feed-bound")
        if "drain_after_up_s" in row.details:
            d = row.details
            out.append(
                f"{row.key}: drained {row.messages:,} messages {d['drain_after_up_s']} s after the provider came back "
                f"({d['outage_s']:g} s outage): first status after {d['first_status_after_up_s']} s, then "
                f"{d['drain_rate_msg_per_s']:,} msg/s; backlog queued in {d.get('backlog_produce_s')} s"
            )
        provider = row.details.get("provider")
        if row.kind == "service" and provider and provider.get("requests"):
            out.append(
                f"{row.key}: provider got {provider['messages']:,} messages in {provider['requests']:,} requests "
                f"(largest {provider['largest_batch']})"
            )
    return out


def document(rows: list[Row], opts: Options, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON results of a run."""
    rel = ratios(rows)
    return {
        "meta": meta,
        "options": {k: sorted(v) if isinstance(v, frozenset) else v for k, v in vars(opts).items()},
        "rows": [{**row.as_dict(), **rel[row.key]} for row in rows],
        "targets": [{"name": t.name, "verdict": t.verdict, "measured": t.measured} for t in targets(rows, opts)],
        "correct": not problems(rows),
        "problems": problems(rows),
    }
