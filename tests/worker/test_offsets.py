from worker.offsets import OffsetTracker


def test_commit_never_passes_an_unfinished_record():
    t = OffsetTracker()
    for o in range(5):
        t.add(0, o)
    t.finish(0, 1)
    t.finish(0, 2)
    assert t.committable(0) == 0  # offset 0 is still running
    t.finish(0, 0)
    assert t.committable(0) == 3
    t.finish(0, 4)
    assert t.committable(0) == 3
    t.finish(0, 3)
    assert t.committable(0) == 5
    assert t.unfinished == 0


def test_a_record_stays_pending_until_the_checkpoint_that_finished_it_commits():
    """Unfinished (what --max-inflight bounds) drops when a checkpoint collects a record; pending (uncommitted)
    only when that checkpoint commits."""
    t = OffsetTracker()
    for o in range(4):
        t.add(0, o)
    t.finish(0, 0)
    t.finish(0, 1)
    assert (t.unfinished, t.pending) == (2, 4)
    t.finish(0, 1)  # a retried batch finishes its records again: counted once
    assert t.pending == 4
    t.commit({0: 2}, {0: 2})
    assert (t.unfinished, t.pending) == (2, 2)


def test_changed_and_drop():
    t = OffsetTracker()
    t.add(1, 10)
    t.add(2, 20)
    t.add(2, 21)
    t.finish(1, 10)
    t.finish(2, 20)
    assert t.changed() == {1: 11, 2: 21}
    t.commit({1: 11, 2: 21}, {1: 1})
    assert t.changed() == {}
    assert t.pending == 2  # 20 finished but its checkpoint is not committed; 21 unfinished
    t.drop(2)
    assert t.pending == 0 and t.partitions() == [1]
    t.commit({}, {2: 1})  # a checkpoint of a dropped partition settling late changes nothing
    t.finish(1, 10)  # finishing twice is harmless
    assert t.pending == 0
