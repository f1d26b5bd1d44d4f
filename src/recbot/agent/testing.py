"""An offline stand-in for a tool-calling chat model, for examples and tests of agents
that use recbot (no LLM, no network)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["ScriptedToolCaller"]


class ScriptedToolCaller(BaseChatModel):
    """Calls ``tool_name`` once, then answers by presenting what the tool returned.

    The call's arguments are ``args`` when given, else ``{"query": <the user's last
    words>, "k": k}``. An error ToolMessage gets an apology that quotes it, so a test
    can see the loop go on after a tool error.
    """

    tool_name: str = "recommend_items"
    args: dict[str, Any] | None = None
    k: int = 3

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedToolCaller:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            if last.status == "error":
                text = f"Sorry, the tool failed ({str(last.content).splitlines()[0]}); let me ask differently."
            else:
                text = "Here is what I found for you:\n" + str(last.content)
            message = AIMessage(content=text)
        else:
            args = self.args if self.args is not None else {"query": str(last.content), "k": self.k}
            message = AIMessage(content="", tool_calls=[{"name": self.tool_name, "args": args, "id": "call-1"}])
        return ChatResult(generations=[ChatGeneration(message=message)])
