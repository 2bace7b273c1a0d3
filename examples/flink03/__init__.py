"""Agents written for Apache Flink Agents 0.3.1, ported by changing their imports only.

Each module is what a 0.3.1 user writes (``@action(SomeEvent.EVENT_TYPE)``, ``Event.from_event``,
``ResourceName`` constants, ``prompt_args``, ``OutputSchema``); where upstream imports from
``flink_agents.api...`` these import from ``agentplan``.
"""
