from worker.offsets import OffsetTracker


def test_commit_never_passes_an_unfinished_record():
    t = OffsetTracker()
    for o in range(5):
        t.add(0, o)
    t.collected(0, 1)
    t.collected(0, 2)
    assert t.committable(0) == 0  # offset 0 is still running
    t.collected(0, 0)
    assert t.committable(0) == 3
    t.collected(0, 4)
    assert t.committable(0) == 3
    t.collected(0, 3)
    assert t.committable(0) == 5
    assert t.unfinished == 0


def test_changed_and_drop():
    t = OffsetTracker()
    t.add(("in", 1), 10)
    t.add(("in", 2), 20)
    t.add(("in", 2), 21)
    t.collected(("in", 1), 10)
    t.collected(("in", 2), 20)
    assert t.changed() == {("in", 1): 11, ("in", 2): 21}
    t.commit({("in", 1): 11, ("in", 2): 21})
    assert t.changed() == {}
    assert t.unfinished == 1  # 21
    t.drop(("in", 2))
    assert t.unfinished == 0 and t.partitions() == [("in", 1)]
    t.collected(("in", 1), 10)  # collecting twice is harmless
    assert t.unfinished == 0


def test_a_record_the_engine_is_done_with_frees_its_slot_but_stays_uncommitted_until_collected():
    t = OffsetTracker()
    for o in range(3):
        t.add(("in", 0), o)
    t.ran(("in", 0), 0)
    t.ran(("in", 0), 0)  # twice is harmless
    assert (t.unfinished, t.uncollected) == (2, 3)
    assert t.committable(("in", 0)) == 0  # ran, but not in a checkpoint yet
    t.collected(("in", 0), 0)
    assert (t.unfinished, t.uncollected) == (2, 2) and t.committable(("in", 0)) == 1
    t.collected(("in", 0), 1)  # collected without a ran mark first (a dead letter, a parked decision)
    assert (t.unfinished, t.uncollected) == (1, 1)
    t.ran(("in", 0), 1)  # after its collect: nothing left to free
    assert (t.unfinished, t.uncollected) == (1, 1)
    t.add(("in", 0), 3)
    t.ran(("in", 0), 3)
    t.drop(("in", 0))  # 2 running, 3 ran and uncollected
    assert (t.unfinished, t.uncollected) == (0, 0)
