"""`sms-consumer status-tail` against the real broker: its printed counts match what is on the status topic,
and SIGTERM stops it cleanly after a final summary."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from consumer.status import Origin, status_record
from consumer.testing import create_topics, produce, wait_for
from schemas.events import Status


def statuses(count: int, state: Status, provider: str, reason: tuple[str, str] | None = None) -> list[bytes]:
    origin = Origin("in", 0, 0)
    return [
        status_record(
            message_id=f"{provider}-{state.value}-{i}",
            status=state,
            origin=origin,
            provider=provider,
            to="+14155550199",
            reason=reason,
        )[1]
        for i in range(count)
    ]


def last_summary(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """The status and provider tables of the last summary printed."""
    block = re.split(r"^[-=]{48}$", text, flags=re.M)[-1]
    by_status = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M) if m[1] != "count"}
    by_provider = {(m[1], m[2]): int(m[3]) for m in re.finditer(r"^(\S+)\s+(\w+)\s+(\d+)$", block, re.M)}
    return by_status, by_provider


async def test_status_tail_prints_the_counts_of_the_status_topic_and_stops_on_sigterm(kafka_bootstrap, topic_names):
    topic = topic_names("status")
    await create_topics(kafka_bootstrap, {topic: 3})
    refused = ("provider_refused", "number +447946012345 is barred")
    await produce(
        kafka_bootstrap,
        topic,
        [*statuses(40, Status.SENT, "alpha"), *statuses(25, Status.SENT, "beta"), *statuses(3, Status.FAILED, "beta")],
        key_of=None,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "status-tail",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--interval",
        "0.3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMS_")},
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            out.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        await wait_for(lambda: "\n68 statuses in " in "".join(out), timeout=30, what="the first 68 statuses counted")
        # Statuses published while it runs are counted too.
        await produce(kafka_bootstrap, topic, statuses(2, Status.REJECTED, "alpha", refused), key_of=None)
        await wait_for(lambda: "\n70 statuses in " in "".join(out), timeout=30, what="the new statuses counted")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(out)
    assert code == 0, await proc.stderr.read()
    assert "final: " in text
    by_status, by_provider = last_summary(text)
    assert by_status == {"sent": 65, "failed": 3, "rejected": 2}
    assert by_provider == {("alpha", "sent"): 40, ("alpha", "rejected"): 2, ("beta", "sent"): 25, ("beta", "failed"): 3}
    final = text.rsplit("=" * 48, 1)[-1]
    assert "alpha rejected provider_refused to=+141******99" in final and "+447*******45 is barred" in final
    assert "+14155550199" not in text and "+447946012345" not in text


async def test_status_tail_explains_an_unreachable_broker():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "status-tail",
        "--bootstrap",
        "127.0.0.1:1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMS_")},
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "error: cannot connect to Kafka at 127.0.0.1:1 (PLAINTEXT)" in stderr.decode()
