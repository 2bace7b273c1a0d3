"""The checkpoint package: producer steps, the state table, the checkpointer."""
