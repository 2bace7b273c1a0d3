"""The compiled agent (:class:`AgentPlan`) and the built-in actions it adds (``actions/``)."""

from agentplan.plan.agent_plan import AgentPlan

__all__ = ["AgentPlan"]
