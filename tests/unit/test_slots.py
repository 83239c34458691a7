"""The sender's concurrency slots: a counting semaphore that hands a freed slot to the longest waiter."""

import asyncio

import pytest

from consumer.sender import Slots


async def test_slots_bound_concurrency_and_serve_waiters_in_order():
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.take()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == []
    slots.give_back()
    await asyncio.sleep(0)
    assert order == [0]
    # A slot freed while others wait goes to a waiter, never to a newcomer's `try_take`.
    slots.give_back()
    assert not slots.try_take()
    await asyncio.sleep(0)
    assert order == [0, 1]
    slots.give_back()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and slots.free == 0
    for _ in range(2):
        slots.give_back()
    assert slots.free == 2


async def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot():
    slots = Slots(1)
    await slots.take()
    gone = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    slots.give_back()  # nobody waits any more: the slot is free again
    assert slots.free == 1

    await slots.take()
    handed = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give_back()  # handed to the waiter...
    handed.cancel()  # ...which is cancelled before it runs: the slot comes back
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert slots.free == 1 and slots.try_take()


async def test_holder_and_waiters_cancelled_together_all_end_cancelled():
    """As at a drain timeout: every task is cancelled at once; the holder gives its slot back first and
    passes over the waiters already cancelled."""
    slots = Slots(1)

    async def use() -> None:
        await slots.take()
        try:
            await asyncio.sleep(10)
        finally:
            slots.give_back()

    tasks = [asyncio.create_task(use()) for _ in range(3)]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert slots.free == 1 and slots.try_take()
