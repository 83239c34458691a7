import pytest

from consumer.accumulator import Accumulator


def test_batch_is_returned_when_full():
    acc: Accumulator[str, int] = Accumulator(linger=0.1)
    assert acc.add("a", 1, limit=3, now=0.0) is None
    assert acc.add("a", 2, limit=3, now=0.01) is None
    batch = acc.add("a", 3, limit=3, now=0.02)
    assert batch is not None and batch.items == [1, 2, 3] and batch.key == "a"
    assert len(acc) == 0


def test_keys_batch_separately():
    acc: Accumulator[str, int] = Accumulator(linger=1.0)
    acc.add("a", 1, limit=2, now=0)
    acc.add("b", 2, limit=2, now=0)
    assert len(acc) == 2
    batch = acc.add("a", 3, limit=2, now=0)
    assert batch is not None and batch.items == [1, 3]
    assert len(acc) == 1


def test_linger_flushes_partial_batches_in_age_order():
    acc: Accumulator[str, int] = Accumulator(linger=0.1)
    acc.add("a", 1, limit=10, now=0.0)
    acc.add("b", 2, limit=10, now=0.05)
    assert acc.next_due() == pytest.approx(0.1)
    assert acc.due(0.09) == []
    first = acc.due(0.1)
    assert [b.key for b in first] == ["a"]
    assert acc.next_due() == pytest.approx(0.15)
    assert [b.items for b in acc.due(0.2)] == [[2]]
    assert acc.next_due() is None and len(acc) == 0


def test_linger_counts_from_the_first_message_of_a_batch():
    acc: Accumulator[str, int] = Accumulator(linger=0.1)
    acc.add("a", 1, limit=10, now=0.0)
    acc.add("a", 2, limit=10, now=0.09)
    assert [b.items for b in acc.due(0.1)] == [[1, 2]]


def test_drain_returns_everything_once():
    acc: Accumulator[str, int] = Accumulator(linger=10)
    for i in range(7):
        acc.add(str(i % 3), i, limit=100, now=i)
    batches = acc.drain()
    assert sorted(x for b in batches for x in b.items) == list(range(7))
    assert acc.drain() == [] and len(acc) == 0


def test_limit_of_one_sends_each_message_alone():
    acc: Accumulator[str, int] = Accumulator(linger=10)
    batch = acc.add("a", 1, limit=1, now=0)
    assert batch is not None and batch.items == [1]


def test_negative_linger_is_refused():
    with pytest.raises(ValueError):
        Accumulator(linger=-1)
