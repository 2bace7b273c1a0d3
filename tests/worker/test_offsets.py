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


def test_changed_and_drop():
    t = OffsetTracker()
    t.add(("in", 1), 10)
    t.add(("in", 2), 20)
    t.add(("in", 2), 21)
    t.finish(("in", 1), 10)
    t.finish(("in", 2), 20)
    assert t.changed() == {("in", 1): 11, ("in", 2): 21}
    t.commit({("in", 1): 11, ("in", 2): 21})
    assert t.changed() == {}
    assert t.unfinished == 1  # 21
    t.drop(("in", 2))
    assert t.unfinished == 0 and t.partitions() == [("in", 1)]
    t.finish(("in", 1), 10)  # finishing twice is harmless
    assert t.unfinished == 0
