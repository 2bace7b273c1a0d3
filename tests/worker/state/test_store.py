from pathlib import Path

from worker.state.store import PartitionStore


def test_apply_is_atomic_with_offset_and_reopens(tmp_path: Path):
    store = PartitionStore(tmp_path / "p0")
    assert store.changelog_offset() == -1
    store.apply({b"k1": b"s1", b"k2": b"s2"}, 41)
    store.apply({b"k2": None}, 42)
    store.close()
    again, rebuilt = PartitionStore.open_or_rebuild(tmp_path / "p0")
    assert not rebuilt
    assert again.get(b"k1") == b"s1" and again.get(b"k2") is None
    assert again.changelog_offset() == 42
    assert again.keys() == [b"k1"]
    again.close()


def test_corrupt_store_is_rebuilt(tmp_path: Path):
    path = tmp_path / "p1"
    store = PartitionStore(path)
    store.apply({b"k": b"v"}, 5)
    store.close()
    for f in path.iterdir():
        if f.name.startswith("CURRENT"):
            f.write_text("garbage-manifest\n")
    store, rebuilt = PartitionStore.open_or_rebuild(path)
    assert rebuilt
    assert store.changelog_offset() == -1 and store.get(b"k") is None
    store.close()
