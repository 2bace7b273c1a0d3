"""Kafka plumbing for the worker: topic administration and an embedded broker for dev and tests."""
