"""The LangChain tool and retriever: standard tests, a real agent loop, isolation, async."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, create_retriever_tool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from recbot import Recommender, Settings
from recbot.agent import RecbotRetriever, make_recommend_tool
from recbot.agent.testing import ScriptedToolCaller
from recbot.recommender import open_storage, open_store
from tests.conftest import TOY_INTERACTIONS, TOY_ITEMS, KeywordEmbedder, write_jsonl


@functools.cache
def shared_toy_recommender() -> Recommender:
    """One toy recommender for the standard test classes (they build tools from params)."""
    tmp = Path(tempfile.mkdtemp(prefix="recbot-agent-"))
    settings = Settings.create(data_dir=tmp / "data")
    rec = Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=KeywordEmbedder())
    rec.ingest(write_jsonl(tmp / "c.jsonl", TOY_ITEMS), interactions=write_jsonl(tmp / "i.jsonl", TOY_INTERACTIONS))
    return rec


class TestRecommendToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool] | BaseTool:
        return make_recommend_tool  # type: ignore[return-value]

    @property
    def tool_constructor_params(self) -> dict:
        return {"recommender": shared_toy_recommender(), "user_id": "spacefan", "blurbs": False}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"query": "robots in space", "k": 3}


class TestRecommendToolIntegration(ToolsIntegrationTests):
    tool_constructor = TestRecommendToolUnit.tool_constructor
    tool_constructor_params = TestRecommendToolUnit.tool_constructor_params
    tool_invoke_params_example = TestRecommendToolUnit.tool_invoke_params_example


def test_a_real_agent_loop_quotes_a_recommended_title(toy_recommender) -> None:
    tool = make_recommend_tool(toy_recommender, user_id="spacefan", blurbs=False)
    model = ScriptedToolCaller(args={"query": "robots in space", "k": 2})
    agent = create_agent(model, tools=[tool])
    result = agent.invoke({"messages": [{"role": "user", "content": "What should I read next?"}]})
    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1 and tool_messages[0].status == "success"
    artifact = tool_messages[0].artifact
    assert [r["rank"] for r in artifact] == [1, 2]
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and artifact[0]["title"] in final.content
    assert {r["item_id"] for r in artifact}.isdisjoint({"s1", "s2"})  # not already liked


def test_a_negated_ask_through_a_real_agent_loop(toy_recommender) -> None:
    catalog = toy_recommender.storage.items()
    tool = make_recommend_tool(toy_recommender, user_id="baker", blurbs=False)
    agent = create_agent(ScriptedToolCaller(args={"query": "no robots and no kitchen", "k": 4}), tools=[tool])
    result = agent.invoke({"messages": [{"role": "user", "content": "Anything but robots or kitchen stuff?"}]})
    (message,) = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert message.status == "success" and message.content.startswith("Understood: ")
    assert "not robots" in message.content.splitlines()[0]
    items = [catalog[r["item_id"]] for r in message.artifact]
    assert items and all("robots" not in i.tags and i.category != "kitchen" for i in items)


def test_follow_ups_resolve_against_the_tools_last_answer_in_the_same_thread(toy_recommender) -> None:
    tool = make_recommend_tool(toy_recommender, user_id="baker", blurbs=False)

    def ask(query: str, thread: str) -> ToolMessage:
        config = {"configurable": {"thread_id": thread}}
        call = {"name": tool.name, "args": {"query": query, "k": 3}, "id": "1", "type": "tool_call"}
        return tool.invoke(call, config=config)

    first = ask("no baking", "t1")
    shown = [r["item_id"] for r in first.artifact]
    follow = ask("not that one", "t1")
    assert follow.status == "success" and shown[0] not in {r["item_id"] for r in follow.artifact}
    assert follow.content.splitlines()[0].startswith("Understood: not ")
    catalog = toy_recommender.storage.items()
    assert all("baking" not in catalog[r["item_id"]].tags for r in follow.artifact)  # the constraint is kept
    more = ask("more like the second one", "t1")
    assert (
        more.content.splitlines()[0] == f"Understood: not baking, like {catalog[follow.artifact[1]['item_id']].title}"
    )
    other = ask("not that one", "t2")  # another conversation has no previous answer to refer to
    assert "Understood: not that one" not in other.content and other.status == "success"


def test_structured_fields_take_the_same_path(toy_recommender) -> None:
    tool = make_recommend_tool(toy_recommender, user_id="baker", blurbs=False)
    call = {"exclude_tags": ["robots"], "like_items": ["Space Station"], "k": 3}
    message = tool.invoke({"name": tool.name, "args": call, "id": "1", "type": "tool_call"})
    assert message.status == "success"
    assert message.content.splitlines()[0] == "Understood: not robots, like Space Station"
    catalog = toy_recommender.storage.items()
    assert all("robots" not in catalog[r["item_id"]].tags and r["item_id"] != "s3" for r in message.artifact)
    bad = tool.invoke({"name": tool.name, "args": {"like_items": ["No Such Thing"]}, "id": "2", "type": "tool_call"})
    assert bad.status == "error" and "UnknownItemError: no catalog item is called" in bad.content


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"query": "x", "k": 99}, "Invalid arguments: k: Input should be less than or equal to 20"),
        ({"query": "x", "category": "toys"}, "FilterError: unknown category 'toys'"),
    ],
)
def test_tool_errors_reach_the_model_and_the_loop_goes_on(toy_recommender, args, expected) -> None:
    tool = make_recommend_tool(toy_recommender, user_id="spacefan", blurbs=False)
    agent = create_agent(ScriptedToolCaller(args=args), tools=[tool])
    result = agent.invoke({"messages": [{"role": "user", "content": "Recommend something"}]})
    error = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert error.status == "error" and expected in error.content
    assert result["messages"][-1].content.startswith("Sorry, the tool failed")


def test_the_model_never_chooses_the_user(toy_recommender) -> None:
    bound = make_recommend_tool(toy_recommender, user_id="spacefan", blurbs=False)
    assert "user_id" not in bound.tool_call_schema.model_json_schema()["properties"]
    refused = bound.invoke(
        {"name": bound.name, "args": {"query": "x", "user_id": "baker"}, "id": "1", "type": "tool_call"}
    )
    assert refused.status == "error" and "bound to another user" in refused.content
    unbound = make_recommend_tool(toy_recommender, blurbs=False)
    missing = unbound.invoke({"name": unbound.name, "args": {"query": "x"}, "id": "2", "type": "tool_call"})
    assert missing.status == "error" and "no user is bound" in missing.content
    # the host injects the user per call, or through the run config
    per_call = unbound.invoke(
        {"name": unbound.name, "args": {"k": 2, "user_id": "baker"}, "id": "3", "type": "tool_call"}
    )
    via_config = unbound.invoke(
        {"name": unbound.name, "args": {"k": 2}, "id": "4", "type": "tool_call"},
        config={"configurable": {"user_id": "baker"}},
    )
    assert per_call.artifact == via_config.artifact and per_call.status == "success"


def test_two_users_never_see_each_others_reasons(toy_recommender) -> None:
    history = {
        u: {i["item_id"] for i in TOY_INTERACTIONS if i["user_id"] == u and i["rating"] >= 4}
        for u in ("spacefan", "baker")
    }
    tools = {u: make_recommend_tool(toy_recommender, user_id=u, blurbs=False) for u in history}
    for _ in range(3):
        for user, tool in tools.items():
            for query in ("", "space", "bread"):
                _, artifact = tool.func(query=query, k=4)  # type: ignore[misc]
                reasons = {b["item_id"] for r in artifact for b in r["because"]}
                assert reasons <= history[user]


async def test_ainvoke_runs_concurrently_off_the_event_loop(toy_recommender) -> None:
    tool = make_recommend_tool(toy_recommender, user_id="spacefan", blurbs=False)
    queries = ["space", "bread", "tent", "robots", "film", "cake", "", "mountain"]
    expected = [
        tool.invoke({"name": tool.name, "args": {"query": q, "k": 3}, "id": str(i), "type": "tool_call"}).artifact
        for i, q in enumerate(queries)
    ]
    original = toy_recommender.recommend

    def slow(*a: Any, **kw: Any) -> Any:
        time.sleep(0.2)  # stands in for a model call that holds the thread
        return original(*a, **kw)

    toy_recommender.recommend = slow  # type: ignore[method-assign]
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            tool.ainvoke({"name": tool.name, "args": {"query": q, "k": 3}, "id": str(i), "type": "tool_call"})
            for i, q in enumerate(queries)
        )
    )
    elapsed = time.perf_counter() - started
    beat.cancel()
    assert [r.artifact for r in results] == expected
    assert elapsed < 8 * 0.2  # overlapped, not one after another
    assert ticks >= 10  # the loop kept running while the tools worked


def test_retriever_returns_documents_and_plugs_into_create_retriever_tool(toy_recommender) -> None:
    retriever = RecbotRetriever(recommender=toy_recommender, user_id="spacefan", k=2)
    docs = retriever.invoke("robots")
    assert [d.metadata["rank"] for d in docs] == [1, 2]
    assert docs[0].page_content.startswith(docs[0].metadata["title"])
    assert {"score", "because", "category", "tags", "strategy"} <= set(docs[0].metadata)
    assert all(b["item_id"] in {"s1", "s2"} for d in docs for b in d.metadata["because"])
    rag_tool = create_retriever_tool(retriever, "catalog_search", "Search the catalog for this user.")
    assert docs[0].page_content in rag_tool.invoke({"query": "robots"})


async def test_retriever_async(toy_recommender) -> None:
    retriever = RecbotRetriever(recommender=toy_recommender, user_id="baker", k=2)
    assert [d.id for d in await retriever.ainvoke("cake")] == [d.id for d in retriever.invoke("cake")]


def test_the_example_agent_runs_offline(tmp_path: Path, tiny_bert: Path, capsys, monkeypatch) -> None:
    import runpy
    import sys

    from tests.test_cli import cli_ingest

    data = cli_ingest(tmp_path, tiny_bert)
    example = Path(__file__).resolve().parents[1] / "examples" / "langchain_agent.py"
    monkeypatch.setattr(sys, "argv", [str(example), "--data-dir", data, "--user", "baker", "--no-blurbs", "bread"])
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "--- ToolMessage" in out and "Here is what I found for you:" in out
    assert "1. " in out.split("--- ToolMessage")[1]
