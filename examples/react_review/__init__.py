"""A ReAct agent that looks products up with a tool and answers with a structured ReviewDecision."""
