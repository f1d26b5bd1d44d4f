"""recbot as a LangChain tool: the host binds the user, the model asks for items."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from recbot.errors import RecbotError

if TYPE_CHECKING:
    from recbot.recommender import Recommendations, Recommender

__all__ = ["RecommendInput", "format_for_llm", "make_recommend_tool"]

DEFAULT_DESCRIPTION = (
    "Recommend catalog items to the current user, based on what they liked before and on what "
    "they ask for now. Pass the user's ask in plain language: negations ('no horror', 'not a video "
    "game'), types ('a film'), titles ('like Project Hail Mary') and follow-ups ('more please') are "
    "understood. Returns how the ask was understood, then one line per item: title, category, why "
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
            line += f" - {r.blurb}" + (" (template blurb)" if r.blurb_source == "template" else "")
        lines.append(line)
    return "\n".join(lines)


def _validation_message(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
    return "Invalid arguments: " + "; ".join(parts) + ". Fix them and call the tool again."


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
            )
        except RecbotError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
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
