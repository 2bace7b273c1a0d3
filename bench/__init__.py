"""Benchmark harness for the worker: ``python -m bench run [--quick] [--scenarios S1,S2] [--repeats K]``.

Scenarios S1-S7 (see :mod:`bench.scenarios`) run against the embedded broker and the LLM stub,
each repetition on a fresh broker; medians go to ``bench/results/latest.{json,md}`` and plots.
"""
