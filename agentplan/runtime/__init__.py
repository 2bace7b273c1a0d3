"""The event-loop engine shared by the local runner and the Kafka worker."""
