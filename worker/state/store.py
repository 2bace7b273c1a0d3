"""A RocksDB store per input partition, a cache of the committed changelog.

Key states and the changelog offset they reflect are written together in one WriteBatch,
and only after the transaction that produced them committed, so the store never runs ahead
of the changelog.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

logger = logging.getLogger(__name__)

OFFSET_KEY = b"\x00agentfleet:changelog-offset"


class PartitionStore:
    """Key -> state bytes for one partition, plus the last applied changelog offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> Rdict:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        return Rdict(str(path), options=options)

    @classmethod
    def open_or_rebuild(cls, path: Path) -> tuple[PartitionStore, bool]:
        """Open the store; a corrupt one is wiped (it will be rebuilt from the changelog).

        Returns the store and whether it had to be wiped.
        """
        try:
            store = cls(path)
            store.changelog_offset()
            return store, False
        except Exception as exc:  # noqa: BLE001 - any open/read failure means: rebuild
            logger.warning("state store %s is unusable (%s); rebuilding it from the changelog", path, exc)
            shutil.rmtree(path, ignore_errors=True)
            return cls(path), True

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if value is None else bytes(value)

    def changelog_offset(self) -> int:
        """Offset of the last changelog record applied, -1 when none."""
        raw = self._db.get(OFFSET_KEY)
        return -1 if raw is None else struct.unpack(">q", raw)[0]

    def apply(self, states: dict[bytes, bytes | None], changelog_offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in states.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, struct.pack(">q", changelog_offset))
        self._db.write(batch)

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = self._open(self.path)

    def keys(self) -> list[bytes]:
        return [bytes(k) for k in self._db.keys() if bytes(k) != OFFSET_KEY]

    def close(self) -> None:
        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless
            pass
