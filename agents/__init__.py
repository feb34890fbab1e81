"""Agent packages for drgym: each plugs into ``WebResearch-v0`` through ``drgym.agent.Agent``."""
