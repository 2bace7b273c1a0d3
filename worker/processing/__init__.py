"""Flow control between Kafka and the engine: what is paused, why, and when it resumes."""
