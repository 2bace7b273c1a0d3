"""Operational visibility for the worker: Prometheus metrics and HTTP health probes.

Kept separate from the processing path so that metrics collection and probe
serving can never block or fail record processing.
"""
