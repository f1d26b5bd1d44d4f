"""recbot as a LangChain retriever: recommendations as Documents, for RAG chains and
``create_retriever_tool``."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

__all__ = ["RecbotRetriever"]


class RecbotRetriever(BaseRetriever):
    """Retrieve the items recbot recommends to ``user_id`` for a query.

    ``page_content`` is the item's text; ``metadata`` holds the item's fields, the score,
    the rank and the "because you liked" reasons.

    Example:
        >>> retriever = RecbotRetriever(recommender=Recommender.open(".recbot"), user_id="u1", k=4)
        >>> retriever.invoke("a cosy mystery")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recommender: Any  # a recbot.Recommender
    user_id: str
    k: int = 5
    category: str | None = None
    blurbs: bool = False  # write blurbs into metadata["blurb"] (slower)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        recs = self.recommender.recommend(
            self.user_id, query=query or None, k=self.k, category=self.category, blurbs=self.blurbs
        )
        docs = []
        for r in recs:
            metadata = {
                **r.item.to_dict(),
                "score": round(r.score, 4),
                "rank": r.rank,
                "because": [b.to_dict() for b in r.because],
                "strategy": recs.strategy,
            }
            if r.blurb:
                metadata["blurb"] = r.blurb
            docs.append(Document(page_content=r.item.text, metadata=metadata, id=r.item.id))
        return docs

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync())
