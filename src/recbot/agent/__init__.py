"""LangChain integration: a recommend tool for agents and a retriever for RAG chains."""

from recbot.agent.retriever import RecbotRetriever
from recbot.agent.tool import make_recommend_tool

__all__ = ["RecbotRetriever", "make_recommend_tool"]
