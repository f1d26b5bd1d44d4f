"""What the chat page does, without Gradio: plain functions over a Recommender and a
per-browser-session state, so they are tested without a browser."""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from recbot.errors import RecbotError
from recbot.recommender import STRATEGY_TEXT, Recommendations, Recommender
from recbot.types import BlurbUpdate, Recommendation

__all__ = ["ChatHandlers", "Session", "escape_text", "format_recommendation"]

logger = logging.getLogger(__name__)

Message = dict[str, Any]  # {"role": "user"|"assistant", "content": str}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")  # < > & are left to html.escape
NEW_USER = "__new__"


def escape_text(text: str) -> str:
    """Catalog text shown as text: no HTML, no Markdown, whatever the catalog holds.
    Markdown is escaped first, so the entities html.escape makes stay intact."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=False)


def format_recommendation(rec: Recommendation, blurb: str | None, *, show_score: bool | None = None) -> str:
    """One chat card. ``show_score`` (default: unless ``rec.score_kind`` is "hybrid"): a cosine
    reads as a match; the hybrid's blended score (standard deviations, often negative down
    the list) does not, so it is left out."""
    if show_score is None:
        show_score = rec.score_kind != "hybrid"
    score = f" · score {rec.score:.2f}" if show_score else ""
    lines = [f"**{escape_text(rec.item.title)}** · {escape_text(rec.item.category)}{score}"]
    if rec.because:
        lines.append("*because you liked " + ", ".join(escape_text(b.describe()) for b in rec.because) + "*")
    if blurb:
        lines.append(escape_text(blurb))
        if rec.blurb_source == "template":
            lines.append(f"*template blurb, built from the item's facts: {_why_templated(rec.blurb_note)}*")
    return "\n\n".join(lines)


def _why_templated(note: str | None) -> str:
    """The card's short reason for a template blurb, from ``Recommendation.blurb_note``."""
    note = note or ""
    if note.startswith("templated: no generator"):
        return "no blurb generator could be loaded here (recbot train-generator)"
    if note.startswith("templated: busy"):
        return "the blurb generator is busy; ask again for a generated blurb"
    if note.startswith("templated: generation failed"):
        return "the blurb generator failed (see the server log)"
    return "no generated text passed the checks"


@dataclass
class Session:
    """One browser session: its user, and which chat message shows which item."""

    user_id: str | None = None
    shown: dict[int, str] = field(default_factory=dict)  # chat message index -> item id
    last: tuple[str, ...] = ()  # the previous answer's item ids, in order: "more like the second one"
    understood: Any = None  # the previous ask's Interpretation: a follow-up keeps its constraints


def _demo_people() -> dict[str, dict[str, str]]:
    path = resources.files("recbot") / "demo" / "users.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return {}
    return {r["id"]: r for r in rows}


class ChatHandlers:
    """The chat page's behaviour.

    Args:
        recommender: an open Recommender (shared by all sessions; it is thread-safe).
        blurbs: stream a blurb for each recommendation when a generator is available.
    """

    def __init__(self, recommender: Recommender, *, blurbs: bool = True) -> None:
        self.rec = recommender
        self.blurbs = blurbs
        self._people = _demo_people()

    # -- choosing who you are --
    def user_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs: known users (with names for the demo ones), and a new user."""
        choices = []
        for uid in self.rec.users()[:500]:
            person = self._people.get(uid)
            choices.append((f"{uid} · {person['name']}: {person['about']}" if person else uid, uid))
        return [*choices, ("Start as a new user", NEW_USER)]

    def start(self, choice: str | None) -> tuple[Session, list[Message], str]:
        """Begin a session as ``choice``; returns the session, an empty chat and a status line."""
        if not choice:
            return Session(), [], "Pick a user to start."
        user = f"guest-{secrets.token_hex(3)}" if choice == NEW_USER else choice
        session = Session(user_id=user)
        n = len(self.rec.history(user))
        status = f"You are **{escape_text(user)}** ({n} items in your history). Ask for something."
        return session, [], status

    # -- the chat turn --
    def respond(
        self,
        message: str,
        chat: list[Message],
        session: Session,
        k: int = 5,
        category: str | None = None,
        surprise: bool = False,
    ) -> Iterator[tuple[list[Message], Session]]:
        """Answer one turn: the list first, then each blurb as it is written."""
        chat = [*chat, {"role": "user", "content": escape_text(message)}]
        if session.user_id is None:
            yield [*chat, {"role": "assistant", "content": "Pick a user first (top left)."}], session
            return
        user = session.user_id
        events = self.rec.stream(
            user,
            query=message or None,
            k=int(k),
            category=category or None,
            blurbs=self.blurbs,
            surprise=surprise,
            previous=session.last,
            context=session.understood,
        )
        try:
            recs = next(events)
        except RecbotError as exc:
            yield [*chat, {"role": "assistant", "content": escape_text(f"{type(exc).__name__}: {exc}")}], session
            return
        assert isinstance(recs, Recommendations)
        understood = f"Understood: {recs.understood_text}. " if recs.understood_text else ""
        understood += f"Note: {recs.relaxed}. " if recs.relaxed else ""
        chat.append(
            {"role": "assistant", "content": escape_text(understood + STRATEGY_TEXT[recs.strategy].capitalize() + ":")}
        )
        if not recs:
            chat.append({"role": "assistant", "content": "Nothing matched; try another category or ask."})
        first = len(chat)
        shown = dict(session.shown)
        card = format_recommendation
        for i, r in enumerate(recs):
            chat.append({"role": "assistant", "content": card(r, "…" if self.blurbs else None)})
            shown[first + i] = r.item.id
        session = Session(user, shown, tuple(r.item.id for r in recs), recs.understood or session.understood)
        yield list(chat), session
        for update in events:  # blurbs as they are written; a missing generator gives marked templates
            assert isinstance(update, BlurbUpdate)
            content = card(update.done or recs[update.index], update.text)
            chat[first + update.index] = {"role": "assistant", "content": content}
            yield list(chat), session

    # -- feedback and history --
    def feedback(self, session: Session, index: int, liked: bool) -> tuple[list[list[Any]], str]:
        """Thumbs up/down on a recommendation message."""
        item_id = session.shown.get(int(index))
        if session.user_id is None or item_id is None:
            return self.history_rows(session), "That message is not a recommendation."
        self.rec.add_feedback(session.user_id, item_id, liked)
        title = self.rec.catalog()[item_id].title
        verb = "added to your likes" if liked else "will not be shown to you again"
        return self.history_rows(session), f"{escape_text(title)} {verb}."

    def history_rows(self, session: Session) -> list[list[Any]]:
        if session.user_id is None:
            return []
        return [
            [item.title, item.category, h.rating, h.review or ""]
            for item, h in reversed(self.rec.history(session.user_id))
        ]

    def history_titles(self, session: Session) -> list[tuple[str, str]]:
        if session.user_id is None:
            return []
        return [(item.title, item.id) for item, _ in self.rec.history(session.user_id)]

    def catalog_titles(self) -> list[tuple[str, str]]:
        return sorted(((item.title, item.id) for item in self.rec.catalog().values()), key=lambda p: p[0])

    def like(self, session: Session, item_id: str | None) -> tuple[list[list[Any]], str]:
        if session.user_id is None or not item_id:
            return self.history_rows(session), "Pick a user and an item."
        self.rec.add_feedback(session.user_id, item_id, liked=True)
        return self.history_rows(session), "Added to your likes."

    def unlike(self, session: Session, item_id: str | None) -> tuple[list[list[Any]], str]:
        if session.user_id is None or not item_id:
            return self.history_rows(session), "Pick a user and an item."
        self.rec.remove_from_history(session.user_id, item_id)
        return self.history_rows(session), "Removed from your history."

    # -- the API path --
    def api_stream(
        self, user_id: str, query: str = "", k: int = 5, category: str | None = None, *, every_s: float = 0.1
    ) -> Iterator[dict[str, Any]]:
        """``api_recommend``, streamed: the JSON answer with ``"blurb": null`` at once, then
        again as blurbs grow (at most every ``every_s`` seconds), then the finished answer
        with ``"done": true``. Each stream carries only its own user's items and text."""
        events = self.rec.stream(user_id, query=query or None, k=int(k), category=category or None, blurbs=self.blurbs)
        recs = next(events)
        assert isinstance(recs, Recommendations)
        answer = recs.to_dict()
        answer["done"] = False
        yield answer
        last = time.perf_counter()
        for update in events:
            assert isinstance(update, BlurbUpdate)
            row = answer["recommendations"][update.index]
            if update.done is not None:
                answer["recommendations"][update.index] = update.done.to_dict()
            else:
                row["blurb"] = update.text
            if time.perf_counter() - last >= every_s:
                last = time.perf_counter()
                yield answer
        answer["done"] = True
        yield answer

    def api_recommend(self, user_id: str, query: str = "", k: int = 5, category: str | None = None) -> dict[str, Any]:
        """One JSON answer (the shape of ``recbot recommend --json``), for gradio_client."""
        recs = self.rec.recommend(user_id, query=query or None, k=int(k), category=category or None, blurbs=self.blurbs)
        return recs.to_dict()
