"""SQLite storage for the catalog of record, users' interactions, feedback and cached
review vectors. Stdlib sqlite3, WAL, one connection per Storage."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from recbot.types import Interaction, Item

__all__ = ["Storage", "item_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,          -- Item as JSON
    hash TEXT NOT NULL           -- content hash of the embedded text (+ encoder id)
);
CREATE TABLE IF NOT EXISTS interactions (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    rating REAL,
    review TEXT,
    timestamp INTEGER,
    PRIMARY KEY (user_id, item_id)   -- one record per user and item: the latest wins
);
CREATE INDEX IF NOT EXISTS interactions_item ON interactions (item_id);
CREATE TABLE IF NOT EXISTS feedback (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    value INTEGER NOT NULL,          -- +1 liked, -1 disliked
    created INTEGER NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
CREATE TABLE IF NOT EXISTS review_vectors (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,            -- float32, L2-normalised
    PRIMARY KEY (user_id, item_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interaction_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT                     -- whose interactions changed; NULL: a user was forgotten
);
"""
# interaction_log rows kept: a reader that fell further behind refits from the interactions
LOG_KEEP = 100_000


def item_hash(item: Item, encoder_id: str) -> str:
    """Changes when the embedded text or the encoder changes (and only then re-embeds)."""
    return hashlib.sha256(f"{encoder_id}\x00{item.text}".encode()).hexdigest()[:32]


def text_hash(text: str, encoder_id: str) -> str:
    return hashlib.sha256(f"{encoder_id}\x00{text}".encode()).hexdigest()[:32]


def _item_from_json(data: str) -> Item:
    d = json.loads(data)
    return Item(d["id"], d["title"], d["description"], d["category"], tuple(d["tags"]), d["metadata"])


def _item_to_json(item: Item) -> str:
    return json.dumps(
        {
            "id": item.id,
            "title": item.title,
            "description": item.description,
            "category": item.category,
            "tags": list(item.tags),
            "metadata": dict(item.metadata),
        },
        ensure_ascii=False,
    )


class Storage:
    """The data dir's SQLite file. Safe to share between threads (one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._writes = 0  # commits through this Storage (see change_token)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._items: dict[str, Item] | None = None  # read-through cache of the catalog

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._writes += 1

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- items --
    def item_hashes(self) -> dict[str, str]:
        return dict(self._query("SELECT id, hash FROM items"))

    def upsert_items(self, items: Iterable[tuple[Item, str]]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO items (id, data, hash) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET data=excluded.data, hash=excluded.hash",
                [(item.id, _item_to_json(item), h) for item, h in items],
            )
        self._items = None

    def delete_items(self, ids: Iterable[str]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
        self._items = None

    def items(self) -> dict[str, Item]:
        """Every catalog item by id (cached until the next write through this Storage)."""
        if self._items is None:
            self._items = {row[0]: _item_from_json(row[1]) for row in self._query("SELECT id, data FROM items")}
        return self._items

    def item_ids(self) -> list[str]:
        """Every catalog item id, sorted (without reading the items themselves)."""
        return [row[0] for row in self._query("SELECT id FROM items ORDER BY id")]

    def invalidate(self) -> None:
        """Drop cached reads (another process wrote to the file)."""
        self._items = None

    def item_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM items")[0][0])

    # -- interactions --
    def upsert_interactions(self, interactions: Iterable[Interaction]) -> int:
        rows = [(i.user_id, i.item_id, i.rating, i.review, i.timestamp) for i in interactions]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO interactions (user_id, item_id, rating, review, timestamp) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(user_id, item_id) DO UPDATE SET "
                "rating=excluded.rating, review=excluded.review, timestamp=excluded.timestamp",
                rows,
            )
            _log(conn, sorted({row[0] for row in rows}))
        return len(rows)

    def history(self, user_id: str) -> list[Interaction]:
        """A user's interactions, oldest first (ties by item id), feedback likes included."""
        rows = self._query(
            "SELECT user_id, item_id, rating, review, timestamp FROM interactions WHERE user_id = ? "
            "ORDER BY COALESCE(timestamp, 0), item_id",
            (user_id,),
        )
        return [Interaction(*row) for row in rows]

    def histories(self) -> dict[str, list[Interaction]]:
        """Every user's interactions, each oldest first (ties by item id), users sorted."""
        rows = self._query(
            "SELECT user_id, item_id, rating, review, timestamp FROM interactions "
            "ORDER BY user_id, COALESCE(timestamp, 0), item_id"
        )
        out: dict[str, list[Interaction]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(Interaction(*row))
        return out

    def remove_interaction(self, user_id: str, item_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM interactions WHERE user_id = ? AND item_id = ?", (user_id, item_id))
            _log(conn, [user_id])

    def interaction_seq(self) -> int:
        """Where the interaction log stands: read it before reading the interactions a
        model is fitted on, and ask ``interaction_changes`` from it after."""
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM interaction_log")[0][0])

    def interaction_changes(self, since: int) -> tuple[int, list[str] | None]:
        """The log's position now, and the users whose interactions changed after ``since``
        (sorted); None instead of users when a model must be refitted: a user was forgotten
        (the log keeps no name of theirs), or the log no longer reaches back to ``since``."""
        rows = self._query("SELECT seq, user_id FROM interaction_log WHERE seq > ? ORDER BY seq", (since,))
        if not rows:
            return since, []
        first = int(self._query("SELECT MIN(seq) FROM interaction_log")[0][0])
        latest = int(rows[-1][0])
        if first > since + 1 or any(user is None for _, user in rows):
            return latest, None
        return latest, sorted({user for _, user in rows})

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every row of ``user_id`` (interactions with their reviews, feedback, review
        vectors), overwriting the freed pages (``secure_delete``) and folding the write-ahead
        log back, so the text is not left in the file. Returns rows deleted per table."""
        tables = ("interactions", "feedback", "review_vectors")
        with self._lock:
            self._conn.execute("PRAGMA secure_delete = ON")
        counts: dict[str, int] = {}
        with self.transaction() as conn:
            for table in tables:
                counts[table] = conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("DELETE FROM interaction_log WHERE user_id = ?", (user_id,))
            _log(conn, [None])  # readers refit: the log says a user went, not who
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return counts

    def users(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT user_id FROM interactions ORDER BY user_id")]

    def interaction_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM interactions")[0][0])

    def popularity(self) -> dict[str, int]:
        """Number of users who interacted with each item (positively or not)."""
        return dict(self._query("SELECT item_id, COUNT(*) FROM interactions GROUP BY item_id"))

    # -- feedback --
    def add_feedback(self, user_id: str, item_id: str, value: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO feedback (user_id, item_id, value, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(user_id, item_id) DO UPDATE SET value=excluded.value, created=excluded.created",
                (user_id, item_id, int(value), int(time.time())),
            )

    def clear_feedback(self, user_id: str, item_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM feedback WHERE user_id = ? AND item_id = ?", (user_id, item_id))

    def feedback(self, user_id: str) -> dict[str, int]:
        return dict(self._query("SELECT item_id, value FROM feedback WHERE user_id = ?", (user_id,)))

    # -- cached review vectors --
    def review_vectors(self, user_id: str) -> dict[str, tuple[str, np.ndarray]]:
        rows = self._query("SELECT item_id, hash, vector FROM review_vectors WHERE user_id = ?", (user_id,))
        return {r[0]: (r[1], np.frombuffer(r[2], dtype=np.float32)) for r in rows}

    def put_review_vectors(self, rows: Iterable[tuple[str, str, str, np.ndarray]]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO review_vectors (user_id, item_id, hash, vector) VALUES (?, ?, ?, ?)",
                [(u, i, h, np.asarray(v, dtype=np.float32).tobytes()) for u, i, h, v in rows],
            )

    def review_hashes(self) -> dict[tuple[str, str], str]:
        return {(r[0], r[1]): r[2] for r in self._query("SELECT user_id, item_id, hash FROM review_vectors")}

    def change_token(self) -> tuple[int, ...]:
        """Changes whenever the database may have changed: a commit through this Storage,
        or, from any process, the database or its write-ahead log growing or being
        rewritten (their size and modification time). Reading it takes no lock and no
        query, so a reader can ask it on every request and read ``meta`` only when it moved."""
        token = [self._writes]
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = os.stat(path)
            except OSError:
                token += [-1, -1]
            else:
                token += [st.st_size, st.st_mtime_ns]
        return tuple(token)

    # -- meta --
    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _log(conn: sqlite3.Connection, users: Iterable[str | None]) -> None:
    """Record in ``interaction_log`` whose interactions changed (in the writer's
    transaction), keeping its last ``LOG_KEEP`` rows."""
    conn.executemany("INSERT INTO interaction_log (user_id) VALUES (?)", [(u,) for u in users])
    conn.execute("DELETE FROM interaction_log WHERE seq <= (SELECT MAX(seq) FROM interaction_log) - ?", (LOG_KEEP,))
