"""A RocksDB store per input partition, a cache of the committed changelog.

Key states and the changelog offset they reflect are written together in one WriteBatch,
and only after the transaction that produced them committed, so the store never runs ahead
of the changelog.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from pathlib import Path
from typing import cast

from rocksdict import AccessType, Options, Rdict, WriteBatch

from worker.exceptions import ConfigurationError, StateStoreError

logger = logging.getLogger(__name__)

OFFSET_KEY = b"\x00agentfleet:changelog-offset"


def is_io_error(exc: BaseException) -> bool:
    """RocksDB's "IO error: ..." (ENOSPC, EACCES, lock held) or an OSError, as opposed to corruption."""
    return isinstance(exc, OSError) or str(exc).startswith(("IO error", "Resource busy"))


def ensure_writable(state_dir: Path) -> None:
    """Fail fast when ``state_dir`` cannot hold stores: create it, then write and sync a probe file.

    Checked at start-up so a read-only volume or a wrong path is a configuration error, not a
    crash at the first commit.
    """
    probe = state_dir / f".agentfleet-write-probe-{os.getpid()}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as file:
            file.write(b"probe")
            file.flush()
            os.fsync(file.fileno())
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError("state-dir", f"{state_dir} is not writable: {exc.strerror or exc} "
                                              "(set --state-dir / AGENTFLEET_STATE_DIR to a writable directory)"
                                 ) from exc


class PartitionStore:
    """Key -> state bytes for one partition, plus the last applied changelog offset."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """``read_only``: for operator tools; it takes no lock, so it works while a worker holds the store."""
        self.path = path
        self._db = self._open(path, read_only)

    @staticmethod
    def _open(path: Path, read_only: bool = False) -> Rdict:
        options = Options(raw_mode=True)
        if read_only:
            return Rdict(str(path), options=options, access_type=AccessType.read_only())
        path.mkdir(parents=True, exist_ok=True)
        options.create_if_missing(True)
        return Rdict(str(path), options=options)

    @classmethod
    def open_or_rebuild(cls, path: Path) -> tuple[PartitionStore, bool]:
        """Open the store; a corrupt one is wiped (it will be rebuilt from the changelog).

        Returns the store and whether it had to be wiped. An I/O failure (disk full, no
        permission, store locked by another process) is not corruption: wiping would throw away
        a healthy cache or another worker's store, so it raises :class:`StateStoreError`.
        """
        try:
            store = cls(path)
            store.changelog_offset()
            return store, False
        except Exception as exc:  # noqa: BLE001 - RocksDB reports every failure as a bare Exception
            if is_io_error(exc):
                raise StateStoreError(f"state-dir: cannot open the state store {path}: {exc}") from exc
            logger.warning("state store %s is corrupt (%s); deleting it and rebuilding from the changelog",
                           path, exc)
            shutil.rmtree(path, ignore_errors=True)
            try:
                return cls(path), True
            except Exception as again:  # noqa: BLE001
                raise StateStoreError(f"state-dir: cannot recreate the state store {path}: {again}") from again

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if value is None else bytes(value)

    def changelog_offset(self) -> int:
        """Offset of the last changelog record applied, -1 when none."""
        raw = self._db.get(OFFSET_KEY)
        return -1 if raw is None else struct.unpack(">q", raw)[0]

    def apply(self, states: dict[bytes, bytes | None], changelog_offset: int) -> None:
        """Write key states and their changelog offset atomically; a failed write raises StateStoreError."""
        batch = WriteBatch(raw_mode=True)
        for key, value in states.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, struct.pack(">q", changelog_offset))
        try:
            self._db.write(batch)
        except Exception as exc:  # noqa: BLE001 - RocksDB reports every failure as a bare Exception
            raise StateStoreError(f"state-dir: cannot write the state store {self.path}: {exc}. State up to "
                                  "the last commit is safe in the changelog; a restart restores it") from exc

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = self._open(self.path)

    def scan(self, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` key states in key order, starting past ``after`` (from the first when None)."""
        found: list[tuple[bytes, bytes]] = []
        iterator = self._db.iter()
        if after is None:
            iterator.seek_to_first()
        else:
            iterator.seek(after)
        while iterator.valid() and len(found) < limit:
            key = bytes(iterator.key())
            if key != OFFSET_KEY and key != after:
                found.append((key, bytes(iterator.value())))
            iterator.next()
        return found

    def keys(self) -> list[bytes]:
        return [key for key in map(bytes, cast(list[bytes], self._db.keys())) if key != OFFSET_KEY]

    def close(self) -> None:
        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless
            pass
