"""The write path: one owner of ingest, tuning, feedback and the index version.

``Recommender`` serves from the data dir (``recbot.serving``) and hands every change to an
``Index``. Each change leaves a token in the data dir's meta table, which every reader
(this process or another) compares on its next call:

- ``version``: the catalog or its vectors changed (ingest): vectors, caches and the ask
  index are reloaded;
- ``interactions``: who liked what changed (ingest of interactions, a thumbs-up or -down, a
  removal): the collaborative model and popularity are refitted;
- ``hybrid``: the blend weights (``tune``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from recbot.catalog import Format
from recbot.config import Settings
from recbot.errors import UnknownItemError
from recbot.ingest import IngestReport, ingest
from recbot.retrieval.embedder import Embedder
from recbot.retrieval.hybrid import DEFAULT_WEIGHTS, HybridWeights, tune
from recbot.retrieval.store import VectorStore
from recbot.storage import Storage
from recbot.types import Interaction

if TYPE_CHECKING:
    from recbot.generation.train import TrainConfig, TrainReport

__all__ = ["Index"]


class Index:
    """Every write to a data dir: ingest, tuning, feedback, generator training.

    Args:
        settings: the data dir and knobs.
        storage, store, embedder: the SQLite store, the vector store and the encoder
            (shared with the Recommender that reads them).
    """

    def __init__(self, settings: Settings, *, storage: Storage, store: VectorStore, embedder: Embedder) -> None:
        self.settings = settings
        self.storage = storage
        self.store = store
        self.embedder = embedder

    def ingest(
        self,
        path: str | Path | None,
        *,
        fmt: Format = "auto",
        interactions: str | Path | None = None,
        strict: bool = False,
        holdout_last: bool = False,
    ) -> IngestReport:
        """Ingest a catalog and/or interactions (``recbot.ingest.ingest``); when the catalog
        or the interactions changed, choose the hybrid's weights again (``tune``)."""
        report = ingest(
            path,
            storage=self.storage,
            store=self.store,
            embedder=self.embedder,
            fmt=fmt,
            interactions=interactions,
            strict=strict,
            holdout_last=holdout_last,
        )
        self.store.refresh()  # tuning reads the new vectors and histories (ingest bumped ``version``)
        self.storage.invalidate()
        changed = report.interactions or report.added or report.updated or report.removed
        if changed or self.storage.get_meta("hybrid") is None:
            report.hybrid = self.tune().describe()
        return report

    def tune(self, *, show_progress: bool = True) -> HybridWeights:
        """Choose the hybrid's blend weights on the stored interactions (each user's latest
        item held out) and store them with the index."""
        from tqdm.auto import tqdm

        view = self.store.exact_view()
        histories = self.storage.histories()
        if view is None or not len(view.ids):
            chosen = HybridWeights(dict(DEFAULT_WEIGHTS), "default", 0)
        else:
            chosen = tune(
                histories,
                view.ids,
                view.matrix,
                seed=self.settings.seed,
                # tuned with the profile serving uses: reviews, recency and dislikes as configured
                review_vectors=lambda user: {i: v for i, (_h, v) in self.storage.review_vectors(user).items()},
                review_weight=self.settings.review_weight,
                half_life_days=self.settings.recency_half_life_days,
                dislike_weight=self.settings.dislike_weight,
                progress=lambda it, n: tqdm(
                    it, total=n, desc="Choosing weights", unit="grid", disable=not show_progress
                ),
            )
        self.storage.set_meta("hybrid", chosen.to_json())
        return chosen

    def hybrid_weights(self) -> HybridWeights:
        """The blend weights serving uses (stored by ``tune``; this version's defaults before)."""
        stored = HybridWeights.from_json(raw) if (raw := self.storage.get_meta("hybrid")) else None
        if stored is None or stored.source == "default":
            return HybridWeights(dict(DEFAULT_WEIGHTS), "default", stored.users if stored else 0)
        return stored

    def add_feedback(self, user_id: str, item_id: str, liked: bool) -> None:
        """Thumbs up adds the item to the user's history; thumbs down hides it for good."""
        if item_id not in self.storage.items():
            raise UnknownItemError(f"item {item_id!r} is not in the catalog")
        self.storage.add_feedback(user_id, item_id, 1 if liked else -1)
        if liked:
            self.storage.upsert_interactions([Interaction(user_id, item_id, 5.0, None, int(time.time()))])
        else:
            self.storage.remove_interaction(user_id, item_id)
        self.interactions_changed()

    def remove_from_history(self, user_id: str, item_id: str) -> None:
        """Forget one item from a user's history (it may be recommended again)."""
        self.storage.remove_interaction(user_id, item_id)
        self.storage.clear_feedback(user_id, item_id)
        self.interactions_changed()

    def interactions_changed(self) -> None:
        """Who liked what changed: readers refit the collaborative model and popularity."""
        self.storage.set_meta("interactions", uuid.uuid4().hex)

    def train_generator(self, config: TrainConfig | None = None, *, out_dir: str | Path | None = None) -> TrainReport:
        """Train the blurb generator on the catalog and interactions; save it to
        ``DATA_DIR/generator`` (or ``out_dir``)."""
        from recbot.generation.train import TrainConfig, train_generator
        from recbot.generation.writer import GENERATOR_DIR

        catalog = self.storage.items()
        vectors = self.store.get_vectors(list(catalog))
        interactions = [h for user in self.storage.users() for h in self.storage.history(user)]
        target = Path(out_dir) if out_dir else Path(self.settings.data_dir) / GENERATOR_DIR
        return train_generator(catalog, interactions, vectors, target, config or TrainConfig())
