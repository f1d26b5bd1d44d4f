"""The Gradio chat page: ``build_demo(recommender) -> gr.Blocks`` and ``launch``."""

# No `from __future__ import annotations` here: Gradio reads the handlers' type hints
# (gr.LikeData) at run time to know which event data to pass.
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recbot.errors import ConfigError
from recbot.ui.handlers import ChatHandlers, Session

if TYPE_CHECKING:
    import gradio as gr

    from recbot.recommender import Recommender

__all__ = ["LOCAL_HOSTS", "build_demo", "check_exposure", "launch", "quiet_environment"]

logger = logging.getLogger(__name__)


def quiet_environment() -> None:
    """Nothing phones home: Gradio analytics off, no Hugging Face hub lookups, no telemetry.
    Gradio reads these at import, so an entry point calls this before anything imports it
    (``launch`` and ``recbot chat`` do; a host that calls ``build_demo`` itself calls it first).
    The only place recbot writes ``os.environ`` besides the CLI's own start-up."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # gradio_client looks up huggingface.co otherwise
    os.environ.setdefault("DO_NOT_TRACK", "1")


def build_demo(
    recommender: "Recommender",
    *,
    blurbs: bool = True,
    handlers: ChatHandlers | None = None,
    logged_in: bool = False,
) -> "gr.Blocks":
    """The chat page over ``recommender``. Each browser session has its own user state.

    Args:
        logged_in: the page is served with authentication: every session's user is the
            logged-in user (``gr.Request.username``), there is no user picker, and the
            ``/recommend`` API refuses any other ``user_id``. Without it (the local demo on
            127.0.0.1) a picker lets the visitor be any user.
    """
    import gradio as gr

    h = handlers or ChatHandlers(recommender, blurbs=blurbs)
    categories = recommender.categories()

    def own(s: Session, request: gr.Request | None) -> Session:
        """The session, bound to the logged-in user when the page has logins."""
        if not logged_in:
            return s
        username = getattr(request, "username", None)
        if not username:
            raise gr.Error("not logged in")
        return s if s.user_id == username else Session(user_id=str(username))

    with gr.Blocks(title="recbot", analytics_enabled=False) as demo:
        session = gr.State(Session())
        intro = (
            "Ask for something, and see why each item was picked."
            if logged_in
            else ("Pick who you are, ask for something, and see why each item was picked.")
        )
        gr.Markdown(f"# recbot\n{intro}")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                user = None
                if not logged_in:
                    user = gr.Dropdown(choices=h.user_choices(), label="You are", value=None, elem_id="user-picker")
                status = gr.Markdown("Pick a user to start." if not logged_in else "", elem_id="status")
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

        def begin(choice: str | None) -> tuple[Any, ...]:
            s, messages, text = h.start(choice)
            return s, messages, text, h.history_rows(s), gr.update(choices=h.history_titles(s), value=None)

        started = [session, chat, status, history, remove_item]
        if user is not None:
            user.change(begin, [user], started, api_visibility="private")
        else:

            def on_load(request: gr.Request) -> tuple[Any, ...]:
                return begin(str(own(Session(), request).user_id))

            demo.load(on_load, None, started, api_visibility="private")

        def on_send(
            message: str,
            messages: list[dict[str, Any]],
            s: Session,
            n: int,
            cat: str,
            sur: bool,
            request: gr.Request,
        ) -> Any:
            yield from h.respond(message, messages, own(s, request), n, cat, sur)

        # Take the ask and clear the box at once, then answer: clearing after the answer
        # streamed would wipe whatever the user typed meanwhile.
        pending = gr.State("")
        for trigger in (send.click, ask.submit):
            trigger(lambda text: (text, ""), [ask], [pending, ask], queue=False, api_visibility="private").then(
                on_send, [pending, chat, session, k, category, surprise], [chat, session], api_visibility="private"
            )

        def on_like(s: Session, data: gr.LikeData, request: gr.Request) -> tuple[Any, ...]:
            s = own(s, request)
            index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
            rows, text = h.feedback(s, int(index), bool(data.liked))
            return rows, text, gr.update(choices=h.history_titles(s))

        chat.like(on_like, [session], [history, status, remove_item], api_visibility="private")

        def on_add(s: Session, item_id: str | None, request: gr.Request) -> tuple[Any, ...]:
            s = own(s, request)
            rows, text = h.like(s, item_id)
            return rows, text, gr.update(choices=h.history_titles(s), value=None)

        def on_remove(s: Session, item_id: str | None, request: gr.Request) -> tuple[Any, ...]:
            s = own(s, request)
            rows, text = h.unlike(s, item_id)
            return rows, text, gr.update(choices=h.history_titles(s), value=None)

        add_btn.click(on_add, [session, add_item], [history, status, remove_item], api_visibility="private")
        remove_btn.click(on_remove, [session, remove_item], [history, status, remove_item], api_visibility="private")

        # the API path (gradio_client): one JSON answer per call, or that answer streamed
        def api_user(user_id: str, request: gr.Request | None) -> str:
            """The user an API call may ask for: the logged-in one when the page has logins."""
            if logged_in:
                me = str(own(Session(), request).user_id)
                if user_id not in ("", me):
                    raise gr.Error(f"logged in as {me}: this page recommends for you only, not for {user_id!r}")
                return me
            if not user_id:
                raise gr.Error("user_id is required")
            return user_id

        def recommend(
            user_id: str = "",
            query: str = "",
            k: int = 5,
            category: str = "",
            request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in; the annotation tells it to
        ) -> dict[str, Any]:
            return h.api_recommend(api_user(user_id, request), query, k, category or None)

        def recommend_stream(
            user_id: str = "",
            query: str = "",
            k: int = 5,
            category: str = "",
            request: gr.Request = None,  # type: ignore[assignment]
        ) -> Any:
            yield from h.api_stream(api_user(user_id, request), query, k, category or None)

        gr.api(
            recommend_stream,
            api_name="recommend_stream",
            api_description="The /recommend answer streamed: at once without blurbs, then as they are written "
            '(the last message has "done": true).',
        )

        description = "Recommendations for a user, as JSON." + (
            " Logged in: always the logged-in user (user_id may be left empty)." if logged_in else ""
        )
        gr.api(recommend, api_name="recommend", api_description=description)
    return demo


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_exposure(host: str, auth: Sequence[tuple[str, str]] | None) -> None:
    """Refuse to serve the user picker beyond this machine.

    Raises:
        ConfigError: ``host`` is not local and there are no logins.
    """
    if host not in LOCAL_HOSTS and not auth:
        raise ConfigError(
            f"serving on {host} without logins would let anyone read any user's history; "
            "pass --auth USER:PASS or --auth-file FILE"
        )


def launch(
    recommender: "Recommender",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: Sequence[tuple[str, str]] | None = None,
    blurbs: bool = True,
    block: bool = True,
) -> Any:
    """Serve the chat page; binds 127.0.0.1 unless told otherwise.

    Args:
        auth: (user, password) logins. With them each visitor is the user they log in
            as; without them the page has a user picker, which is only served on this
            machine: a host reachable from others needs logins.

    Raises:
        ConfigError: ``host`` is not local and there are no logins.
    """
    check_exposure(host, auth)
    quiet_environment()
    demo = build_demo(recommender, blurbs=blurbs, logged_in=bool(auth))
    # turns run at once: their blurbs share the generator's steps (Settings.page_concurrency)
    demo.queue(default_concurrency_limit=recommender.settings.page_concurrency)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=list(auth) if auth else None,
        share=False,
        prevent_thread_lock=not block,
        quiet=False,
        footer_links=["api"],
        ssr_mode=False,
        mcp_server=False,
    )
    return demo
