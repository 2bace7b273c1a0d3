from pathlib import Path

import pytest

from worker.exceptions import ConfigurationError, StateStoreError
from worker.state.store import PartitionStore, ensure_writable


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


def test_io_error_at_open_is_not_mistaken_for_corruption(tmp_path: Path):
    """A store locked by another owner (or a full disk) raises; wiping it would destroy good state."""
    path = tmp_path / "p2"
    owner = PartitionStore(path)
    owner.apply({b"k": b"v"}, 3)
    with pytest.raises(StateStoreError, match="^state-dir: cannot open the state store"):
        PartitionStore.open_or_rebuild(path)
    assert owner.get(b"k") == b"v" and owner.changelog_offset() == 3
    owner.close()


def test_unwritable_state_dir_is_a_configuration_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="^state-dir: .* is not writable"):
        ensure_writable(blocker / "state")
    ensure_writable(tmp_path / "fine" / "app")
    assert list((tmp_path / "fine" / "app").iterdir()) == []  # the probe file is removed
