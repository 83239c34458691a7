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


def test_a_repeated_distinct_value_closes_the_open_batch_and_opens_the_next():
    acc: Accumulator[str, str] = Accumulator(linger=1.0)
    assert acc.add("k", "a1", limit=5, now=0.0, distinct="+1") is None
    assert acc.add("k", "b1", limit=5, now=0.1, distinct="+2") is None
    closed = acc.add("k", "a2", limit=5, now=0.2, distinct="+1")
    assert closed is not None and closed.items == ["a1", "b1"] and closed.opened_at == 0.0
    assert len(acc) == 1
    # The new batch is the youngest: it is due after its own linger, not the old one's.
    assert acc.next_due() == pytest.approx(1.2)
    assert acc.add("k", "b2", limit=5, now=0.3, distinct="+2") is None
    assert [b.items for b in acc.drain()] == [["a2", "b2"]] and len(acc) == 0


def test_without_distinct_values_repeats_share_a_batch():
    acc: Accumulator[str, str] = Accumulator(linger=1.0)
    acc.add("k", "a1", limit=5, now=0.0)
    acc.add("k", "a2", limit=5, now=0.0)
    assert [b.items for b in acc.drain()] == [["a1", "a2"]]
