"""The paper's CoT and CoT + RAG baselines: retrieve passages for the question, answer in one model call.

``RAGAgent(llm=..., retrieval="bm25" | "dense" | "none")``; see :mod:`agents.rag_baseline.agent`.
"""

from .agent import RAGAgent
from .retrieve import RETRIEVALS, RetrievedPassage, Retriever

__all__ = ["RETRIEVALS", "RAGAgent", "RetrievedPassage", "Retriever"]
