from consumer.offsets import OffsetTracker


def test_in_order_completion_commits_one_past_the_last_offset():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    tickets = [t.track("p0", o) for o in range(5)]
    for ticket in tickets:
        t.complete(ticket)
    assert t.committable() == {"p0": 5}


def test_out_of_order_completion_commits_only_the_contiguous_prefix():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    tickets = [t.track("p0", o) for o in range(10, 15)]
    t.complete(tickets[2])
    t.complete(tickets[4])
    assert t.committable() == {}  # 10 is where reading started: nothing moved yet
    t.complete(tickets[0])
    assert t.committable() == {"p0": 11}
    t.complete(tickets[1])
    assert t.committable() == {"p0": 13}
    t.complete(tickets[3])
    assert t.committable() == {"p0": 15}
    assert t.pending_count("p0") == 0


def test_gaps_in_offsets_do_not_block_commits():
    # Compacted topics and transaction markers leave holes in the offsets a consumer sees.
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    a, b = t.track("p0", 3), t.track("p0", 7)
    t.complete(b)
    assert t.committable() == {}
    t.complete(a)
    assert t.committable() == {"p0": 8}


def test_partitions_are_independent():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0", "p1"])
    a = t.track("p0", 0)
    b = t.track("p1", 0)
    t.complete(b)
    assert t.committable() == {"p1": 1}
    t.complete(a)
    assert t.committable() == {"p0": 1, "p1": 1}


def test_committed_offsets_are_not_offered_again():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    t.complete(t.track("p0", 0))
    offsets = t.committable()
    t.mark_committed(offsets)
    assert t.committable() == {}
    t.complete(t.track("p0", 1))
    assert t.committable() == {"p0": 2}


def test_completion_from_a_revoked_assignment_is_ignored():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    stale = t.track("p0", 0)
    t.revoke(["p0"])
    t.assign(["p0"])
    fresh = t.track("p0", 40)
    assert t.complete(stale) is False
    assert t.committable() == {}
    assert t.complete(fresh) is True
    assert t.committable() == {"p0": 41}


def test_nothing_committable_before_any_record():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    assert t.committable() == {}


def test_tracking_backwards_is_an_error():
    t: OffsetTracker[str] = OffsetTracker()
    t.assign(["p0"])
    t.track("p0", 5)
    try:
        t.track("p0", 4)
    except ValueError:
        return
    raise AssertionError("tracking an older offset must fail")
