"""LangChain integration: a recommend tool for agents and a retriever for RAG chains.

Needs the ``agent`` extra: ``pip install 'recbot[agent]'``.
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError("recbot.agent needs the 'agent' extra (langchain-core): pip install 'recbot[agent]'") from exc

from recbot.agent.retriever import RecbotRetriever
from recbot.agent.tool import make_recommend_tool

__all__ = ["RecbotRetriever", "make_recommend_tool"]
