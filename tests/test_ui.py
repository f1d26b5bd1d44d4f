"""The chat page: handlers without a browser, then the real page in headless Chromium and
through gradio_client, with every outgoing connection of this process recorded."""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recbot import ConfigError, Recommender, Settings
from recbot.generation.writer import LazyWriter
from recbot.recommender import open_storage, open_store
from recbot.ui.handlers import NEW_USER, ChatHandlers, escape_text
from tests.conftest import TOY_INTERACTIONS, TOY_ITEMS, KeywordEmbedder, write_jsonl

EVIL = {"id": "x1", "title": "<img src=x onerror=alert(1)>", "category": "books", "description": "a haunted lighthouse"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUT = Path(__file__).resolve().parents[1] / "out" / "screenshots"
WAIT_MS = 120_000  # playwright waits (not timings): a busy 2-core machine can take long to render


def _build(tmp: Path, gpt2: Path, items: list | None = None, interactions: list | None = None) -> Recommender:
    settings = Settings.create(data_dir=tmp / "data", generator=str(gpt2), max_new_tokens=12, num_candidates=1)
    rec = Recommender(
        settings,
        storage=open_storage(settings),
        store=open_store(settings),
        embedder=KeywordEmbedder(),
        writer=LazyWriter(settings),
    )
    rec.ingest(
        write_jsonl(tmp / "c.jsonl", items or [*TOY_ITEMS, EVIL]),
        interactions=write_jsonl(tmp / "i.jsonl", interactions or TOY_INTERACTIONS),
    )
    return rec


@pytest.fixture
def handlers(tmp_path: Path, tiny_gpt2: Path) -> Iterator[ChatHandlers]:
    rec = _build(tmp_path, tiny_gpt2)
    yield ChatHandlers(rec)
    rec.close()


def test_escape_text_shows_markup_as_text() -> None:
    assert escape_text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert\\(1\\)&gt;"
    assert escape_text("**Dune** [link](http://x)") == "\\*\\*Dune\\*\\* \\[link\\]\\(http://x\\)"


def test_cards_show_a_cosine_score_but_not_the_hybrids() -> None:
    from recbot.types import Item, Reason, Recommendation
    from recbot.ui.handlers import format_recommendation

    rec = Recommendation(Item("a", "Alpha", category="books"), -0.34, 3, (Reason("b", "Beta", 0.5, 7),))
    assert format_recommendation(rec, None).startswith("**Alpha** · books · score -0.34")
    card = format_recommendation(rec, "A blurb.", show_score=False)
    assert card.splitlines()[0] == "**Alpha** · books"
    assert "*because you liked Beta \\(0\\.50; 7 others have both\\)*" in card  # Markdown-escaped
    assert card.endswith("A blurb\\.")


def test_a_turn_streams_then_feedback_changes_the_next_turn(handlers: ChatHandlers) -> None:
    session, chat, status = handlers.start("baker")
    assert "baker" in status and chat == []
    frames = list(handlers.respond("bread", chat, session, k=3))
    assert len(frames) > 2  # the list first, then blurb text as it is written
    first_chat, session = frames[0]
    assert all("…" in m["content"] for m in first_chat[2:])  # placeholders before the blurbs
    final, session = frames[-1]
    shown = dict(session.shown)
    assert len(shown) == 3 and all("…" not in final[i]["content"] for i in shown)
    history = {i["item_id"] for i in TOY_INTERACTIONS if i["user_id"] == "baker"}
    assert set(shown.values()).isdisjoint(history)
    index, item_id = next(iter(shown.items()))
    rows, note = handlers.feedback(session, index, liked=False)
    assert "will not be shown to you again" in note
    final2, session = list(handlers.respond("bread", final, session, k=8))[-1]
    assert item_id not in {session.shown[i] for i in range(len(final), len(final2)) if i in session.shown}
    rows, note = handlers.like(session, "h1")
    assert rows[0][0] == "Trail Boots"
    rows, note = handlers.unlike(session, "h1")
    assert all(r[0] != "Trail Boots" for r in rows)


def test_without_a_generator_the_cards_carry_marked_template_blurbs(tmp_path: Path, tiny_gpt2: Path) -> None:
    rec = _build(tmp_path, tiny_gpt2)
    rec.writer = LazyWriter(rec.settings.replace(generator=str(tmp_path / "no-such-generator")))
    handlers = ChatHandlers(rec)
    session, chat, _ = handlers.start("baker")
    final, session = list(handlers.respond("bread", chat, session, k=3))[-1]
    cards = [final[i]["content"] for i in session.shown]
    assert len(cards) == 3
    note = "template blurb, built from the item's facts: no blurb generator could be loaded here"
    assert all("Because you liked" in c and note in c for c in cards), cards
    rec.close()


def test_new_users_are_separate(handlers: ChatHandlers) -> None:
    a, _, _ = handlers.start(NEW_USER)
    b, _, _ = handlers.start(NEW_USER)
    assert a.user_id != b.user_id and a.user_id.startswith("guest-")
    handlers.like(a, "s1")
    assert handlers.history_rows(b) == [] and len(handlers.history_rows(a)) == 1


def test_errors_become_messages(handlers: ChatHandlers) -> None:
    session, chat, _ = handlers.start("baker")
    final, _ = list(handlers.respond("x", chat, session, category="toys"))[-1]
    assert final[-1]["content"].startswith("FilterError: unknown category")
    nobody = list(handlers.respond("x", [], handlers.start(None)[0]))[-1][0]
    assert "Pick a user first" in nobody[-1]["content"]


# -- the real page --


class ConnectionLog:
    """Every connect() and name lookup this process makes while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.addresses: list[str] = []
        real_connect, real_connect_ex, real_getaddrinfo = (
            socket.socket.connect,
            socket.socket.connect_ex,
            socket.getaddrinfo,
        )

        def connect(sock: socket.socket, address: Any) -> Any:
            self._note(address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            self._note(address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            self._note((host, 0))
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def _note(self, address: Any) -> None:
        if isinstance(address, tuple) and address:
            self.addresses.append(str(address[0]))

    def outside(self) -> list[str]:
        def loopback(host: str) -> bool:
            if host in ("localhost", ""):
                return True
            try:
                return ipaddress.ip_address(host).is_loopback
            except ValueError:
                return False

        return sorted({a for a in self.addresses if not loopback(a)})


@pytest.fixture
def server(
    tmp_path: Path, tiny_gpt2: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, ConnectionLog, Recommender]]:
    log = ConnectionLog(monkeypatch)
    rec = _build(tmp_path, tiny_gpt2)
    from recbot.ui.app import build_demo

    demo = build_demo(rec)
    demo.queue(default_concurrency_limit=rec.settings.page_concurrency)  # as recbot.ui.app.serve does
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, ssr_mode=False
    )
    try:
        yield url.rstrip("/"), log, rec
    finally:
        demo.close()
        rec.close()
    assert log.outside() == [], f"connections beyond loopback: {log.outside()}"


def _wait_for_answer(page: Any, turn: int) -> list[str]:
    """Wait until turn ``turn``'s recommendations have their blurbs; return their titles."""
    page.wait_for_function(
        """(turn) => {
            const rows = [...document.querySelectorAll('#chat .message-row')];
            const users = rows.filter(r => r.querySelector('[data-testid=user]'));
            if (users.length < turn) return false;
            const after = rows.slice(rows.indexOf(users[turn - 1]) + 1);
            const recs = after.filter(r => r.querySelector('strong'));
            return recs.length > 0
                && recs.every(r => !r.innerText.includes('…') && r.innerText.includes('because you liked'));
        }""",
        arg=turn,
        timeout=120_000,  # generous: the machine may be busy; this waits, it does not time anything
    )
    rows = page.locator("#chat .message-row")
    users = [i for i in range(rows.count()) if rows.nth(i).locator("[data-testid=user]").count()]
    start = users[turn - 1] + 1
    return [
        rows.nth(i).locator("strong").first.inner_text()
        for i in range(start, rows.count())
        if rows.nth(i).locator("strong").count()
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)")
def test_browser_session(server: tuple[str, ConnectionLog, Recommender]) -> None:
    from playwright.sync_api import sync_playwright

    url, _, rec = server
    catalog_titles = {i.title for i in rec.storage.items().values()}
    history_titles = {i.title for i, _ in rec.history("spacefan")}
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        page.wait_for_selector("#ask textarea", timeout=WAIT_MS)
        page.click("#user-picker input")
        page.keyboard.type("spacefan")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#status').innerText.includes('spacefan')", timeout=WAIT_MS)

        page.fill("#ask textarea", "space robots")
        page.click("#send")
        first = _wait_for_answer(page, 1)
        assert first and set(first) <= catalog_titles and not set(first) & history_titles

        disliked = first[0]
        row = page.locator("#chat .message-row").filter(has=page.locator("strong", has_text=disliked)).last
        row.hover()
        # each message's thumbs sit in the button bar right after its row
        buttons = row.locator("xpath=following-sibling::div[contains(@class, 'message-buttons')][1]")
        buttons.locator("button[aria-label='Dislike']").click()
        hidden = "document.querySelector('#status').innerText.includes('will not be shown')"
        page.wait_for_function(hidden, timeout=WAIT_MS)

        page.fill("#ask textarea", "space robots")
        page.click("#send")
        page.wait_for_function("document.querySelector('#ask textarea').value === ''", timeout=WAIT_MS)  # taken at once
        page.fill("#ask textarea", "typed while it answers")
        second = _wait_for_answer(page, 2)
        assert second and disliked not in second
        assert page.input_value("#ask textarea") == "typed while it answers"  # not wiped when the answer ends

        page.fill("#ask textarea", "haunted lighthouse")
        page.click("#send")
        third = _wait_for_answer(page, 3)
        assert EVIL["title"] in third  # shown literally, as text
        assert page.locator("#chat img[src='x']").count() == 0 and dialogs == []
        OUT.mkdir(parents=True, exist_ok=True)
        page.locator("#chat .bubble-wrap").evaluate("e => e.scrollTop = e.scrollHeight")
        page.wait_for_timeout(300)
        page.screenshot(path=str(OUT / "chat.png"), full_page=True)
        browser.close()
    assert rec.storage.feedback("spacefan")  # the thumbs-down reached SQLite


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)")
def test_two_browser_sessions_stream_at_once_each_seeing_only_its_own(
    server: tuple[str, ConnectionLog, Recommender], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two visitors (separate browser contexts: separate gradio sessions) ask at the same
    time; their blurbs are decoded in one batch, and each page, watched as it streams,
    only ever shows its own user's items."""
    import threading

    from playwright.sync_api import sync_playwright

    url, _, rec = server
    lazy = rec.writer
    assert isinstance(lazy, LazyWriter)
    writer = lazy.get()
    writer.batcher.window_s = 3.0  # the first ask waits (up to 3 s) for the second: they share the decode
    finals: dict[str, list[str]] = {}
    both_done = threading.Barrier(3)
    real_stream = lazy.stream

    def stream(history, recs, catalog):  # the served stream, noting each turn's finished blurbs
        blurbs = {}
        for update in real_stream(history, recs, catalog):
            if update.done is not None:
                blurbs[update.index] = update.done.blurb or ""
            yield update
        finals[history[0][1].user_id] = [blurbs[i] for i in sorted(blurbs)]
        both_done.wait(timeout=120)

    watch = """() => { window.seen = [];
        new MutationObserver(() => window.seen.push(document.querySelector('#chat').innerText))
            .observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true}); }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pages = {}
        for user in ("spacefan", "baker"):
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            page.goto(url)
            page.wait_for_selector("#ask textarea", timeout=WAIT_MS)
            page.click("#user-picker input")
            page.keyboard.type(user)
            page.keyboard.press("Enter")
            page.wait_for_function(f"document.querySelector('#status').innerText.includes('{user}')", timeout=WAIT_MS)
            page.evaluate(watch)
            page.fill("#ask textarea", "something good")
            pages[user] = page
        monkeypatch.setattr(lazy, "stream", stream)
        for page in pages.values():
            page.click("#send")
        both_done.wait(timeout=120)  # both turns' blurbs are written
        for user, page in pages.items():
            page.wait_for_function(
                "(texts) => texts.every(t => document.querySelector('#chat').innerText.includes(t))",
                arg=finals[user],
                timeout=WAIT_MS,
            )
        seen = {user: page.evaluate("window.seen") for user, page in pages.items()}
        shown = {user: set(page.locator("#chat strong").all_inner_texts()) for user, page in pages.items()}
        browser.close()
    assert writer.batcher.peak_requests >= 2  # the two turns' blurbs were decoded together
    for user, other in (("spacefan", "baker"), ("baker", "spacefan")):
        own = {i.title for i, _ in rec.history(user)}  # a card's "because you liked" names these
        assert len(shown[user]) == 5 and not shown[user] & own
        foreign = shown[other] - shown[user] - own
        assert foreign and len(seen[user]) > 2  # the page changed as it streamed
        assert not [t for snapshot in seen[user] for t in foreign if t in snapshot]  # never, not even mid-stream


def test_gradio_client_api(server: tuple[str, ConnectionLog, Recommender]) -> None:
    from gradio_client import Client

    url, _, _ = server
    client = Client(url + "/", verbose=False)
    out = client.predict(user_id="baker", query="bread", k=3, category="", api_name="/recommend")
    assert out["user_id"] == "baker" and len(out["recommendations"]) == 3
    history = {i["item_id"] for i in TOY_INTERACTIONS if i["user_id"] == "baker"}
    assert all(b["item_id"] in history for r in out["recommendations"] for b in r["because"])
    assert all(r["blurb"] for r in out["recommendations"])
    client.close()


def test_concurrent_streams_carry_only_their_own_items(server: tuple[str, ConnectionLog, Recommender]) -> None:
    """Two sessions stream at the same time (their blurbs batched together): every message of
    each stream holds its own user's items, reasons and blurb text only."""
    import threading

    from gradio_client import Client

    url, _, _ = server
    titles = {i["id"]: i["title"] for i in TOY_ITEMS}
    streams: dict[str, list[dict[str, Any]]] = {}

    def run(user: str, query: str) -> None:
        client = Client(url + "/", verbose=False)
        job = client.submit(user, query, 3, "", api_name="/recommend_stream")
        streams[user] = list(job)
        client.close()

    threads = [threading.Thread(target=run, args=a) for a in (("baker", "bread"), ("spacefan", "robots"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for user, messages in streams.items():
        assert messages and messages[-1]["done"] and messages[-1]["user_id"] == user
        history = {i["item_id"] for i in TOY_INTERACTIONS if i["user_id"] == user}
        own = [r["item_id"] for r in messages[0]["recommendations"]]
        others = {titles[i] for i in titles if i not in own and i not in history}
        for m in messages:
            assert [r["item_id"] for r in m["recommendations"]] == own  # the list never changes mid-stream
            for r in m["recommendations"]:
                assert all(b["item_id"] in history for b in r["because"])
                text = r["blurb"] or ""
                assert not any(t in text for t in others if len(t) > 8), (user, text)  # no other item named
        assert all(r["blurb"] and r["blurb_source"] for r in messages[-1]["recommendations"])


def test_recbot_chat_listens_on_loopback_only(tmp_path: Path, tiny_bert: Path) -> None:
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil

    from tests.test_cli import cli_ingest

    data = cli_ingest(tmp_path, tiny_bert)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recbot = str(Path(sys.executable).parent / "recbot")
    proc = subprocess.Popen(
        [recbot, "--data-dir", data, "chat", "--port", str(port), "--no-blurbs"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "recbot chat did not serve within 90 s"
                time.sleep(0.2)
        listening = {
            c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_auth_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from recbot.cli import main

    assert main(["--data-dir", str(tmp_path), "chat", "--auth", "nopassword"]) == 1
    assert capsys.readouterr().err.strip() == "ConfigError: --auth takes USER:PASS"


def _game(item_id: str, title: str, *tags: str) -> dict:
    return {"id": item_id, "title": title, "category": "games", "tags": list(tags), "description": title.lower()}


GAMES = [
    _game("g1", "Catan", "board game", "trading"),
    _game("g2", "Chess Set", "board game", "strategy"),
    _game("g3", "Ticket to Ride", "board game", "family"),
    _game("g4", "Dixit", "board game", "party"),
    _game("g5", "Terraforming Mars", "board game", "strategy"),
    _game("g6", "Azul", "board game", "family"),
    _game("g7", "Hades", "video game", "action"),
    _game("g8", "Carcassonne", "board game", "family"),
    _game("g9", "Celeste", "video game", "platformer"),
    _game("g10", "Wingspan", "board game", "family"),
]
GAMER = [
    {"user_id": "gamer", "item_id": "g7", "rating": 5, "timestamp": 1735689600},
    {"user_id": "gamer", "item_id": "g4", "rating": 5, "timestamp": 1738368000},
    {"user_id": "other", "item_id": "g1", "rating": 5, "timestamp": 1738368000},
]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)")
def test_browser_two_turns_with_a_follow_up(tmp_path: Path, tiny_gpt2: Path) -> None:
    """'a board game, no strategy', then 'more like the second one': both answers keep the
    constraints, and the second is anchored on the first answer's second item."""
    from playwright.sync_api import sync_playwright

    from recbot.ui.app import build_demo

    rec = _build(tmp_path, tiny_gpt2, GAMES, GAMER)
    by_title = {i.title: i for i in rec.storage.items().values()}
    demo = build_demo(rec)
    demo.queue()
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, ssr_mode=False
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url.rstrip("/"))
            page.wait_for_selector("#ask textarea", timeout=WAIT_MS)
            page.click("#user-picker input")
            page.keyboard.type("gamer")
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelector('#status').innerText.includes('gamer')", timeout=WAIT_MS)
            page.fill("#ask textarea", "a board game, no strategy")
            page.click("#send")
            first = _wait_for_answer(page, 1)
            assert len(first) >= 2
            for title in first:
                assert "board game" in by_title[title].tags and "strategy" not in by_title[title].tags, title
            second_item = first[1]
            page.fill("#ask textarea", "more like the second one")
            page.click("#send")
            second = _wait_for_answer(page, 2)
            assert second and second_item not in second
            for title in second:
                assert "board game" in by_title[title].tags and "strategy" not in by_title[title].tags, title
            assert page.locator("#chat").inner_text().count(f"like {second_item}") >= 1
            OUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT / "chat-follow-up.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
        rec.close()


LOGINS = [("baker", "pw-baker"), ("spacefan", "pw-space")]


def _history_titles(user: str) -> set[str]:
    titles = {i["id"]: i["title"] for i in TOY_ITEMS}
    return {titles[i["item_id"]] for i in TOY_INTERACTIONS if i["user_id"] == user}


@pytest.fixture
def logged_in_server(tmp_path: Path, tiny_gpt2: Path) -> Iterator[str]:
    from recbot.ui.app import build_demo

    rec = _build(tmp_path, tiny_gpt2)
    demo = build_demo(rec, blurbs=False, logged_in=True)
    demo.queue()
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, ssr_mode=False, auth=LOGINS
    )
    try:
        yield url.rstrip("/")
    finally:
        demo.close()
        rec.close()


def test_a_login_sees_only_its_own_recommendations_through_gradio_client(logged_in_server: str) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError, AuthenticationError

    client = Client(logged_in_server + "/", auth=LOGINS[0], verbose=False)
    mine = client.predict("", "", 3, "", api_name="/recommend")
    assert mine["user_id"] == "baker" and len(mine["recommendations"]) == 3
    reasons = {b["title"] for r in mine["recommendations"] for b in r["because"]}
    assert reasons and reasons <= _history_titles("baker")  # only baker's own history is revealed
    with pytest.raises(AppError, match="logged in as baker: this page recommends for you only, not for 'spacefan'"):
        client.predict("spacefan", "", 3, "", api_name="/recommend")
    with pytest.raises(AuthenticationError):
        Client(logged_in_server + "/", verbose=False)  # no login, no page and no API


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)")
def test_browser_login_binds_the_user_and_hides_the_picker(logged_in_server: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(logged_in_server)
        page.fill("input[type=text]", "spacefan")
        page.fill("input[type=password]", "pw-space")
        page.keyboard.press("Enter")
        page.wait_for_selector("#ask textarea", timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#status').innerText.includes('spacefan')", timeout=WAIT_MS)
        assert page.locator("#user-picker").count() == 0
        page.fill("#ask textarea", "something for the kitchen")
        page.click("#send")
        page.wait_for_function(
            "[...document.querySelectorAll('#chat .message-row')].some(r => r.innerText.includes('because you liked'))",
            timeout=120_000,
        )
        text = page.locator("#chat").inner_text()
        named = {t for t in {i["title"] for i in TOY_ITEMS} if f"because you liked {t}" in text}
        assert named and named <= _history_titles("spacefan"), named
        browser.close()


def test_a_page_beyond_this_machine_needs_logins(tmp_path: Path, capsys) -> None:
    from recbot.cli import main
    from recbot.ui.app import check_exposure

    with pytest.raises(ConfigError, match=r"serving on 0\.0\.0\.0 without logins"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", LOGINS)
    check_exposure("127.0.0.1", None)
    assert main(["--data-dir", str(tmp_path / "d"), "chat", "--host", "0.0.0.0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "ConfigError: serving on 0.0.0.0 without logins would let anyone read any user's history; "
        "pass --auth USER:PASS or --auth-file FILE"
    )
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may log in\nbaker:pw\n\nspacefan\n", encoding="utf-8")
    assert main(["--data-dir", str(tmp_path / "d"), "chat", "--host", "0.0.0.0", "--auth-file", str(logins)]) == 1
    assert capsys.readouterr().err.strip() == f"ConfigError: {logins} line 4: expected USER:PASS"
