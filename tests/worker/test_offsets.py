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
    assert t.pending == 0


def test_changed_and_drop():
    t = OffsetTracker()
    t.add(1, 10)
    t.add(2, 20)
    t.finish(1, 10)
    assert t.changed() == {1: 11, 2: 20}
    t.mark_committed({1: 11, 2: 20})
    assert t.changed() == {}
    t.drop(2)
    assert t.pending == 0 and t.partitions() == [1]
    t.finish(1, 10)  # finishing twice is harmless
    assert t.pending == 0
