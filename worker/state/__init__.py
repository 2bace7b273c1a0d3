"""Per-partition key state: RocksDB stores mirroring the changelog topic."""
