"""The benchmark suite's smoke run: every scenario and ceiling, tiny and side by side, accounts for every message."""

import pytest

from bench.cli import execute, parser

pytestmark = pytest.mark.kafka

SCENARIOS = {"K", "K(batch)", "H(a)", "a", "H(b)", "b", "H(c)", "c", "H(d)", "d", "linger", "e"}


def test_bench_smoke_run_gives_every_message_exactly_one_sent_status(kafka_bootstrap, tmp_path):
    args = parser().parse_args(["--smoke", "--bootstrap", kafka_bootstrap, "--results-dir", str(tmp_path)])

    code, doc, path = execute(args)

    assert path.is_file() and path.parent == tmp_path
    assert doc["problems"] == []
    assert code == 0
    rows = {row["key"]: row for row in doc["rows"]}
    assert set(rows) == SCENARIOS
    for key, row in rows.items():
        assert row["correct"], (key, row)
        if row["kind"] == "ceiling-http":
            assert row["checks"] == {"every request accepted": True}
            continue
        details = row["details"]
        assert details["missing"] == 0 and details["duplicates"] == 0, (key, details)
        assert details["by_status"] == {"sent": row["messages"]}, (key, details)
        assert row["checks"]["every message has a status"]
    for key in ("a", "b", "c", "d", "linger", "e"):
        checks = rows[key]["checks"]
        assert checks["offsets committed to the end"] and checks["service stopped cleanly"], (key, checks)
        assert rows[key]["details"]["provider"]["messages"] >= rows[key]["messages"]
    assert rows["a"]["details"]["provider"]["largest_batch"] <= 1000
    assert rows["c"]["details"]["provider"]["largest_batch"] == 1
    # Performance targets are not judged on a smoke run.
    assert {target["verdict"] for target in doc["targets"]} == {"n/a"}
