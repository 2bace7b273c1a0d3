"""The Kafka runtime for agentplan agents."""
