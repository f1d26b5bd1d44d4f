"""recbot as a LangChain tool: the host binds the user, the model asks for items."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from recbot.errors import RecbotError

if TYPE_CHECKING:
    from recbot.ask import Interpretation
    from recbot.recommender import Recommendations, Recommender

__all__ = ["RecommendInput", "format_for_llm", "make_recommend_tool"]

DEFAULT_DESCRIPTION = (
    "Recommend catalog items to the current user, based on what they liked before and on what "
    "they ask for now. Pass the user's ask in plain language: negations ('no horror', 'not a video "
    "game'), types ('a film'), titles ('like Project Hail Mary') and follow-ups on this tool's "
    "previous answer in the conversation ('more like the second one', 'not that one', 'more please') "
    "are understood. Returns how the ask was understood, then one line per item: title, category, why "
    "it was picked and a short blurb. Only recommend items this tool returns."
)


class RecommendInput(BaseModel):
    """What the calling model may choose. The user is never among these."""

    query: str = Field(
        default="",
        description="What the user asks for, in their own words (e.g. 'something lighter than Dune'). "
        "Empty: recommend from their history alone.",
    )
    k: int = Field(default=5, ge=1, le=20, description="How many items to recommend (1-20).")
    category: str | None = Field(default=None, description="Only items of this catalog category, e.g. 'Books'.")
    exclude_categories: list[str] = Field(default_factory=list, description="Never items of these categories.")
    exclude_tags: list[str] = Field(default_factory=list, description="Never items with these tags, e.g. 'horror'.")
    like_items: list[str] = Field(
        default_factory=list, description="Titles (or item ids) the answer should resemble; they are not recommended."
    )
    # Supplied by the host per call (tool.invoke({..., "user_id": ...})), hidden from the model.
    user_id: Annotated[str | None, InjectedToolArg] = Field(default=None)


def format_for_llm(recs: Recommendations) -> str:
    """One compact line per item that a calling model can quote."""
    lines = [f"Understood: {recs.understood_text}"] if recs.understood_text else []
    if recs.relaxed:
        lines.append(f"Note: {recs.relaxed}")
    if not recs:
        return "\n".join([*lines, "No items matched."])
    if recs.strategy in ("query", "popular"):
        lines.append(
            "(No usable history for this user yet: "
            + ("ranked by the request alone.)" if recs.strategy == "query" else "popular items.)")
        )
    for r in recs:
        why = "; ".join(f"you liked {b.title}" for b in r.because) or "matches your request"
        line = f"{r.rank}. {r.item.title} [{r.item.category}] - {why}"
        if r.blurb:
            if r.blurb_source == "template":
                busy = (r.blurb_note or "").startswith("templated: busy")
                line += f" - {r.blurb} (template blurb{': the generator is busy' if busy else ''})"
            else:
                line += f" - {r.blurb}"
        lines.append(line)
    return "\n".join(lines)


def _validation_message(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
    return "Invalid arguments: " + "; ".join(parts) + ". Fix them and call the tool again."


_SESSIONS = 1024  # conversations remembered per tool for follow-ups; the oldest is forgotten first


class _Sessions:
    """The last answer per (user, conversation), so "more like the second one" and "not that
    one" resolve against what this tool showed in the same thread. Thread-safe, bounded."""

    def __init__(self, size: int = _SESSIONS) -> None:
        self._last: OrderedDict[tuple[str, str], tuple[list[str], Interpretation | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: tuple[str, str]) -> tuple[list[str], Interpretation | None]:
        with self._lock:
            return self._last.get(key, ([], None))

    def put(self, key: tuple[str, str], recs: Recommendations) -> None:
        with self._lock:
            self._last[key] = ([r.item.id for r in recs], recs.understood)
            self._last.move_to_end(key)
            while len(self._last) > self._size:
                self._last.popitem(last=False)


def make_recommend_tool(
    recommender: Recommender,
    *,
    name: str = "recommend_items",
    description: str | None = None,
    user_id: str | None = None,
    blurbs: bool = True,
) -> BaseTool:
    """A LangChain tool over ``recommender``, for agents.

    The user is bound by the host: ``user_id`` here, or per call as the injected
    argument ``user_id`` (``tool.invoke({"query": ..., "user_id": "u1"})``), or
    ``config["configurable"]["user_id"]``. The model chooses ``query``, ``k``,
    ``category`` and, if it prefers structured fields, ``exclude_categories``,
    ``exclude_tags`` and ``like_items`` (they join the interpretation of ``query``).
    Errors (unknown category, no index, bad arguments) come back to the
    model as an error ToolMessage, so the agent can carry on.

    Follow-ups ("more like the second one", "not that one", "more please") resolve
    against this tool's previous answer to the same user in the same conversation:
    ``config["configurable"]["thread_id"]`` (what LangGraph agents pass), else one
    conversation per user. The last 1024 conversations are remembered.

    Args:
        recommender: an open Recommender.
        name: tool name the model sees.
        description: tool description the model sees.
        user_id: bind the tool to this user for good (a per-call user is then refused).
        blurbs: write blurbs (slower; needs a generator).

    Returns:
        A StructuredTool with ``response_format="content_and_artifact"``: the content is
        one line per item, the artifact the list of recommendations as plain dicts.

    Example:
        >>> tool = make_recommend_tool(Recommender.open(".recbot"), user_id="u1")
        >>> tool.invoke({"query": "a cosy mystery", "k": 3})
    """

    sessions = _Sessions()

    def resolve_user(call_user: str | None, config: RunnableConfig | None) -> str:
        configured = ((config or {}).get("configurable") or {}).get("user_id")
        if user_id is not None:
            if call_user not in (None, user_id) or configured not in (None, user_id):
                raise ToolException("this tool is bound to another user")
            return user_id
        chosen = call_user or configured
        if not chosen:
            raise ToolException("no user is bound to this tool; the host must supply user_id")
        return str(chosen)

    def run(
        query: str = "",
        k: int = 5,
        category: str | None = None,
        exclude_categories: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        like_items: list[str] | None = None,
        user_id: str | None = None,
        # annotated exactly RunnableConfig: that is how langchain knows to pass the run config
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> tuple[str, list[dict[str, Any]]]:
        user = resolve_user(user_id, config)
        session = (user, str(((config or {}).get("configurable") or {}).get("thread_id", "")))
        previous, context = sessions.get(session)
        try:
            recs = recommender.recommend(
                user,
                query=query or None,
                k=k,
                category=category,
                blurbs=blurbs,
                exclude_categories=exclude_categories or (),
                exclude_tags=exclude_tags or (),
                like=like_items or (),
                previous=previous,
                context=context,
            )
        except RecbotError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        sessions.put(session, recs)
        return format_for_llm(recs), [r.to_dict() for r in recs]

    async def arun(
        query: str = "",
        k: int = 5,
        category: str | None = None,
        exclude_categories: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        like_items: list[str] | None = None,
        user_id: str | None = None,
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> tuple[str, list[dict[str, Any]]]:
        # the models run in a worker thread: the event loop stays free
        return await asyncio.to_thread(
            run, query, k, category, exclude_categories, exclude_tags, like_items, user_id, config
        )

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description or DEFAULT_DESCRIPTION,
        args_schema=RecommendInput,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=_validation_message,
    )
