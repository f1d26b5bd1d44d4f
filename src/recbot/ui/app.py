"""The Gradio chat page: ``build_demo(recommender) -> gr.Blocks`` and ``launch``."""

# No `from __future__ import annotations` here: Gradio reads the handlers' type hints
# (gr.LikeData) at run time to know which event data to pass.
import logging
import os
from typing import TYPE_CHECKING, Any

from recbot.ui.handlers import ChatHandlers, Session

if TYPE_CHECKING:
    import gradio as gr

    from recbot.recommender import Recommender

__all__ = ["build_demo", "launch"]

logger = logging.getLogger(__name__)


def _quiet_environment() -> None:
    """Nothing phones home: set before gradio is imported, since it reads them at import."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # gradio_client looks up huggingface.co otherwise
    os.environ.setdefault("DO_NOT_TRACK", "1")


def build_demo(recommender: "Recommender", *, blurbs: bool = True, handlers: ChatHandlers | None = None) -> "gr.Blocks":
    """The chat page over ``recommender``. Each browser session has its own user state."""
    _quiet_environment()
    import gradio as gr

    h = handlers or ChatHandlers(recommender, blurbs=blurbs)
    categories = recommender.categories()
    with gr.Blocks(title="recbot", analytics_enabled=False) as demo:
        session = gr.State(Session())
        gr.Markdown("# recbot\nPick who you are, ask for something, and see why each item was picked.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                user = gr.Dropdown(choices=h.user_choices(), label="You are", value=None, elem_id="user-picker")
                status = gr.Markdown("Pick a user to start.", elem_id="status")
                k = gr.Slider(1, 20, value=5, step=1, label="How many")
                category = gr.Dropdown(choices=["", *categories], value="", label="Category (optional)")
                surprise = gr.Checkbox(label="Surprise me (more variety)", value=False)
                with gr.Accordion("Your history", open=False):
                    history = gr.Dataframe(
                        headers=["title", "category", "rating", "review"], interactive=False, elem_id="history"
                    )
                    add_item = gr.Dropdown(choices=h.catalog_titles(), label="Add a like", value=None)
                    add_btn = gr.Button("Like it")
                    remove_item = gr.Dropdown(choices=[], label="Remove from history", value=None)
                    remove_btn = gr.Button("Remove")
            with gr.Column(scale=2):
                chat = gr.Chatbot(
                    label="recbot",
                    height=560,
                    elem_id="chat",
                    sanitize_html=True,
                    feedback_options=("Like", "Dislike"),
                    group_consecutive_messages=False,  # one thumbs pair per recommendation
                )
                ask = gr.Textbox(placeholder="e.g. something lighter than Dune", label="Ask", elem_id="ask")
                send = gr.Button("Send", variant="primary", elem_id="send")

        def on_user(choice: str | None) -> tuple[Any, ...]:
            s, messages, text = h.start(choice)
            return s, messages, text, h.history_rows(s), gr.update(choices=h.history_titles(s), value=None)

        user.change(on_user, [user], [session, chat, status, history, remove_item], api_visibility="private")

        def on_send(message: str, messages: list[dict[str, Any]], s: Session, n: int, cat: str, sur: bool) -> Any:
            yield from h.respond(message, messages, s, n, cat, sur)

        # Take the ask and clear the box at once, then answer: clearing after the answer
        # streamed would wipe whatever the user typed meanwhile.
        pending = gr.State("")
        for trigger in (send.click, ask.submit):
            trigger(lambda text: (text, ""), [ask], [pending, ask], queue=False, api_visibility="private").then(
                on_send, [pending, chat, session, k, category, surprise], [chat, session], api_visibility="private"
            )

        def on_like(s: Session, data: gr.LikeData) -> tuple[Any, ...]:
            index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
            rows, text = h.feedback(s, int(index), bool(data.liked))
            return rows, text, gr.update(choices=h.history_titles(s))

        chat.like(on_like, [session], [history, status, remove_item], api_visibility="private")

        def on_add(s: Session, item_id: str | None) -> tuple[Any, ...]:
            rows, text = h.like(s, item_id)
            return rows, text, gr.update(choices=h.history_titles(s), value=None)

        def on_remove(s: Session, item_id: str | None) -> tuple[Any, ...]:
            rows, text = h.unlike(s, item_id)
            return rows, text, gr.update(choices=h.history_titles(s), value=None)

        add_btn.click(on_add, [session, add_item], [history, status, remove_item], api_visibility="private")
        remove_btn.click(on_remove, [session, remove_item], [history, status, remove_item], api_visibility="private")

        # the API path (gradio_client): one JSON answer per call
        def recommend(user_id: str, query: str = "", k: int = 5, category: str = "") -> dict[str, Any]:
            return h.api_recommend(user_id, query, k, category or None)

        gr.api(recommend, api_name="recommend", api_description="Recommendations for a user, as JSON.")
    return demo


def launch(
    recommender: "Recommender",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    blurbs: bool = True,
    block: bool = True,
) -> Any:
    """Serve the chat page; binds 127.0.0.1 unless told otherwise."""
    demo = build_demo(recommender, blurbs=blurbs)
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        logger.warning("serving on %s without --auth: anyone who can reach it can use it", host)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        prevent_thread_lock=not block,
        quiet=False,
        footer_links=["api"],
        ssr_mode=False,
        mcp_server=False,
    )
    return demo
