"""An agent that recommends through recbot's LangChain tool.

Offline (a scripted tool-calling model stands in for an LLM):

    python examples/langchain_agent.py --data-dir .recbot --user u1 "something lighter than Dune"

With a real chat model (any provider LangChain's init_chat_model knows, e.g.
"openai:gpt-4o-mini" with langchain-openai installed and its API key set):

    python examples/langchain_agent.py --model openai:gpt-4o-mini --user u1 "a cosy mystery"
"""

from __future__ import annotations

import argparse

from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel

from recbot import Recommender
from recbot.agent import make_recommend_tool
from recbot.agent.testing import ScriptedToolCaller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ask", nargs="?", default="recommend me something")
    parser.add_argument("--data-dir", default=".recbot")
    parser.add_argument("--user", default="u1")
    parser.add_argument("--model", help="a chat model for init_chat_model, e.g. openai:gpt-4o-mini (default: scripted)")
    parser.add_argument("--no-blurbs", action="store_true")
    args = parser.parse_args()

    recommender = Recommender.open(args.data_dir)
    tool = make_recommend_tool(recommender, user_id=args.user, blurbs=not args.no_blurbs)
    if args.model:
        from langchain.chat_models import init_chat_model

        model: BaseChatModel = init_chat_model(args.model)
    else:
        model = ScriptedToolCaller()
    agent = create_agent(
        model,
        tools=[tool],
        system_prompt="You recommend items from a catalog. Always use the recommend_items tool, and only "
        "recommend items it returns.",
    )
    result = agent.invoke({"messages": [{"role": "user", "content": args.ask}]})
    for message in result["messages"]:
        print(f"--- {type(message).__name__}")
        print(message.content or message.tool_calls)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
