"""Recommender: retrieve -> rank -> (write). The one place where the parts meet."""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import numpy as np

from recbot.ask import AskIndex, Interpretation, interpret
from recbot.config import Settings
from recbot.errors import (
    ConfigError,
    EncoderError,
    FilterError,
    IndexNotBuiltError,
    RecbotError,
    StoreError,
    UnknownItemError,
)
from recbot.index import ForgetReport, Index
from recbot.ingest import IngestReport
from recbot.retrieval.embedder import BUNDLED_ENCODER_ID, Embedder, LazyEmbedder
from recbot.retrieval.hybrid import (
    KNN_COMPONENTS,
    CollabModel,
    HybridWeights,
    pool_rows,
    pool_sample,
    pool_scores,
    score_user,
)
from recbot.retrieval.profile import blend_query, interest_profile
from recbot.retrieval.ranking import mmr, unit_range
from recbot.retrieval.store import ChromaStore, Filters, Snapshot, VectorStore, make_client
from recbot.serving import (
    AVOID_PUSH,
    SIMILAR,
    STRATEGY_TEXT,
    ScoreKind,
    Strategy,
    check_filter_fields,
    excluded_by,
    explain,
    fact_scores,
    has_hard_constraints,
    merge_follow_up,
    store_failures,
    too_close,
    type_tag,
    with_facts,
)
from recbot.storage import Storage
from recbot.types import BlurbUpdate, Interaction, Item, Recommendation

if TYPE_CHECKING:
    from recbot.generation.train import TrainConfig, TrainReport

_ASK_CACHE = 1024  # ask texts whose vectors are kept
# Past this many users changed since a model was fitted (or a tenth of its users), it is
# fitted again rather than updated; both give the same model, this only picks the faster.
UPDATE_MAX_USERS = 1000

__all__ = ["STRATEGY_TEXT", "BlurbWriter", "Recommendations", "Recommender", "Strategy"]

logger = logging.getLogger(__name__)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _index_errors(method: Callable[Concatenate[Recommender, _P], _R]) -> Callable[Concatenate[Recommender, _P], _R]:
    """What SQLite and Chroma raise mid-request (a deleted or locked file, a Chroma server that
    is down) becomes ``StoreError``; recbot's own errors pass through."""

    @functools.wraps(method)
    def wrapper(self: Recommender, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except RecbotError:
            raise
        except store_failures() as exc:
            raise StoreError(
                f"the index in {self.settings.data_dir} could not be read ({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper


class BlurbWriter(Protocol):
    """Fills in blurbs for finished recommendations (see recbot.generation.writer.LazyWriter).
    Neither call raises for a missing or failing generator: blurbs are then templated and
    marked ``blurb_source="template"``."""

    def write(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> list[Recommendation]: ...

    def stream(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> Iterator[BlurbUpdate]: ...

    def warm_up(self) -> None: ...


class Recommendations(list[Recommendation]):
    """A list of Recommendation that also says how it was made (and, for an ask, how the
    ask was understood: ``understood`` and its one-line ``understood_text``)."""

    def __init__(
        self,
        recs: list[Recommendation],
        *,
        user_id: str,
        query: str | None,
        strategy: Strategy,
        understood: Interpretation | None = None,
        understood_text: str | None = None,
    ) -> None:
        super().__init__(recs)
        self.user_id = user_id
        self.query = query
        self.strategy: Strategy = strategy
        self.understood = understood
        self.understood_text = understood_text
        self.relaxed: str | None = None  # set when the ask's hard constraints matched nothing and were dropped

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``recbot recommend --json``."""
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "query": self.query,
            "strategy": self.strategy,
            "recommendations": [r.to_dict() for r in self],
        }
        if self.understood is not None:
            out["understood"] = {**self.understood.to_dict(), "text": self.understood_text, "relaxed": self.relaxed}
        return out


class Recommender:
    """Recommend catalog items to a user, with reasons (and blurbs, given a writer).

    Build one with ``Recommender.open(data_dir)``; the heavy parts are injected, so
    tests and server mode pass their own.

    Args:
        settings: ranking knobs (see Settings).
        storage: the SQLite store of items and interactions.
        store: the vector store (Chroma).
        embedder: encodes free-text asks; only loaded when an ask comes in.
        writer: writes blurbs; None means recommendations carry no blurb.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage,
        store: VectorStore,
        embedder: Embedder,
        writer: BlurbWriter | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.store = store
        self.embedder = embedder
        self.writer = writer
        self.index = Index(settings, storage=storage, store=store, embedder=embedder)  # every write goes here
        self._change_token: tuple[int, ...] | None = None
        self._version = storage.get_meta("version")
        self._interactions = storage.get_meta("interactions")  # bumped by feedback (add_feedback)
        self._popularity: dict[str, int] | None = None
        # (popularity, catalog, the catalog's ids most popular first), for the popular path
        self._popular_order: tuple[dict[str, int], Mapping[str, Item], list[str]] | None = None
        # fitted on the stored interactions, with the interaction log's position they hold
        self._collab: tuple[Snapshot, CollabModel, int] | None = None
        self._pool: _Pool | None = None  # the pool path's model over every item, and its sample
        self._model_lock = threading.Lock()  # one thread fits or updates a model; the others wait for it
        self._categories: tuple[Mapping[str, Item], frozenset[str]] | None = None  # (catalog, its categories)
        self._ask_index: AskIndex | None = None  # the catalog's titles, categories and tags, for asks
        self._name_vectors: dict[str, np.ndarray] = {}  # category/tag name -> BERT vector, for asks
        self._ask_vectors: dict[str, np.ndarray] = {}  # recent ask texts -> BERT vector (insertion order)
        self._cache_lock = threading.Lock()

    @classmethod
    def open(
        cls, data_dir: str | Path | None = None, *, settings: Settings | None = None, **overrides: Any
    ) -> Recommender:
        """Open the recommender over an ingested data dir. Models load lazily, once.

        Example:
            >>> rec = Recommender.open("./.recbot")
            >>> [r.item.title for r in rec.recommend("u1", k=3)]
        """
        if settings is None:
            settings = Settings.create(data_dir=data_dir, **overrides)
        elif data_dir is not None:
            settings = settings.replace(data_dir=Path(data_dir))
        storage = open_storage(settings)
        indexed = storage.get_meta("encoder")
        encoder = settings.encoder
        if indexed is not None and encoder is not None and encoder != indexed:
            raise ConfigError(
                f"the index in {settings.data_dir} was built with encoder {indexed!r}, not {encoder!r}: "
                "drop --encoder, or index with it in a new --data-dir"
            )
        if indexed is not None and indexed != BUNDLED_ENCODER_ID:
            encoder = indexed
        embedder = make_embedder(settings.replace(encoder=encoder))
        from recbot.generation.writer import LazyWriter

        return cls(
            settings, storage=storage, store=open_store(settings), embedder=embedder, writer=LazyWriter(settings)
        )

    def close(self) -> None:
        """Release the database connections; the Recommender cannot be used after."""
        self.store.close()
        self.storage.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the core call --
    @_index_errors
    def recommend(
        self,
        user_id: str,
        query: str | None = None,
        k: int | None = None,
        category: str | None = None,
        *,
        filters: Filters | None = None,
        blurbs: bool = True,
        surprise: bool = False,
        previous: Sequence[str] = (),
        relax: bool = True,
        exclude_tags: Sequence[str] = (),
        exclude_categories: Sequence[str] = (),
        like: Sequence[str] = (),
        context: Interpretation | None = None,
    ) -> Recommendations:
        """Recommend ``k`` items to ``user_id``, optionally steered by a free-text ask.

        The ask is interpreted first (``recbot.ask``): a category it names becomes a
        filter, negated tags, categories and titles become exclusions, titles it names
        steer by their own item vectors (and are not recommended themselves), the rest
        is embedded; its weight against the history follows how much it says (a vague
        "more please" leaves the history alone).

        Args:
            user_id: whose history to use; an unknown user is a cold start.
            query: free-text ask ("something lighter than Dune"), blended with the history.
            k: how many items (default: settings.k).
            category: only items of this category.
            filters: more metadata equality filters (``{"tags": "jazz"}`` means has the tag).
            blurbs: write a blurb for each item (needs a writer; skipped otherwise).
            surprise: favour diversity over closeness (lower MMR lambda).
            previous: item ids of the previous answer, in order, for follow-ups
                ("more like the second one", "not that one").
            relax: when the ask's hard constraints leave nothing, answer without them
                and say so in ``relaxed`` (never silently).
            exclude_tags, exclude_categories, like: the same constraints as structured
                fields, for hosts that prefer them (``like``: item ids or titles); they
                join the interpretation of ``query``.
            context: the previous turn's ``understood``: a follow-up or vague ask ("more
                like the second one", "not that one", "more please") keeps its category
                and exclusions.

        Returns:
            Recommendations (a list of Recommendation, best first) with ``.strategy``.

        Raises:
            IndexNotBuiltError: nothing has been ingested into the data dir.
            StoreError: the index (SQLite or Chroma) could not be read.
            EncoderError: the encoder failed on the ask.
        """
        started = time.perf_counter()
        k = self.settings.k if k is None else int(k)
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        self._reload_if_changed()
        catalog = self.storage.items()
        if not catalog:
            raise IndexNotBuiltError(f"no catalog in {self.settings.data_dir}; run: recbot ingest CATALOG")
        # 1. context: the ask read, the user's history, what is ruled out
        understood = self._interpret(query or "", catalog, previous, exclude_tags, exclude_categories, like)
        if understood is not None:
            understood = merge_follow_up(understood, context)
            category = category or understood.category
            surprise = surprise or understood.surprise
        if category:
            category = self._canonical_category(category, catalog)
        check_filter_fields(filters or {}, catalog)
        all_filters = {**(filters or {}), **({"category": category} if category else {})}
        kind = type_tag(understood, category) if understood is not None else None
        if kind and "tags" not in all_filters:  # "a board game": a kind of item, so a filter, not a taste
            all_filters["tags"] = kind
        history = [h for h in self.storage.history(user_id) if h.item_id in catalog]
        feedback = self.storage.feedback(user_id)
        exclude = frozenset(h.item_id for h in history) | {i for i, v in feedback.items() if v < 0}
        if understood is not None:
            similar = bool(like) or bool(SIMILAR.search(query or ""))
            exclude |= excluded_by(understood, catalog, asks_for_similar=similar)
        interest = interest_profile(  # the same profile tuning and the offline eval score with
            history,
            self.store.get_vectors([h.item_id for h in history]) if history else {},
            self._review_vectors(user_id),
            review_weight=self.settings.review_weight,
            half_life_days=self.settings.recency_half_life_days,
            dislike_weight=self.settings.dislike_weight,
        )
        history, hist_vectors, weights, profile = interest.history, interest.vectors, interest.weights, interest.vector
        avoid = self._avoid_vector(understood)
        ask = self._ask_vector(understood, avoid) if understood is not None else None
        # the ask's weight follows how much it says; naming a title ("like Alien") says the most
        said = 1.0 if understood is None or understood.anchors else understood.informativeness
        ask_weight = self.settings.query_weight * said
        target = blend_query(profile, ask, ask_weight)

        # 2. candidates: hybrid scores, else nearest to the target, else popular
        hybrid = self._hybrid() if profile is not None and self.settings.hybrid else None
        pool = self._pool_model() if hybrid is None and profile is not None and self.settings.hybrid else None
        strategy: Strategy
        score_kind: ScoreKind
        ranking = None
        if profile is not None:
            ranking = _Ranking(
                history,
                profile,
                ask,
                all_filters,
                exclude,
                ask_weight,
                understood.anchors if understood is not None else (),
                [t for t in understood.tags if t != kind] if understood is not None else [],
                catalog,
            )
        fetched: dict[str, np.ndarray] | None = None  # candidate vectors the pool path has read already
        if pool is not None and ranking is not None:
            ids, relevance, fetched = self._pool_candidates(pool, ranking)
            strategy, score_kind = ("hybrid-pool" if ask is None else "hybrid-pool+query"), "hybrid"
        elif hybrid is not None and ranking is not None:
            ids, relevance = self._hybrid_candidates(hybrid, ranking)
            strategy, score_kind = ("hybrid" if ask is None else "hybrid+query"), "hybrid"
        elif target is not None:
            hits = self.store.search(target, self.settings.candidates, filters=all_filters or None, exclude=exclude)
            ids, relevance = [h.id for h in hits], np.array([h.score for h in hits])
            strategy = "query" if profile is None else "profile" if ask is None else "profile+query"
            score_kind = "cosine"
        else:
            ids, relevance = self._popular_candidates(catalog, all_filters, exclude)
            strategy, score_kind = "popular", "popularity"

        # 3. rank: what stands out as close to a negated phrase goes, then MMR
        vectors = {i: fetched[i] for i in ids} if fetched is not None else self.store.get_vectors(ids)
        if avoid is not None:
            view = self.store.exact_view()
            dropped = too_close(avoid, vectors, None if view is None else view.matrix @ avoid)
            logger.debug("dropped %d candidate(s) close to the negated phrase(s): %s", len(dropped), sorted(dropped))
            vectors = {i: v for i, v in vectors.items() if i not in dropped}
        keep = [j for j, i in enumerate(ids) if i in vectors]
        ids, relevance = [ids[j] for j in keep], relevance[keep]
        cand = np.stack([vectors[i] for i in ids]) if ids else np.zeros((0, 1), dtype=np.float32)
        lam = self.settings.surprise_mmr_lambda if surprise else self.settings.mmr_lambda
        order = mmr(cand, unit_range(relevance) if score_kind == "hybrid" else relevance, k, lam)

        # 4. explain: "because you liked X", co-occurrence counting as evidence on the hybrid path
        recs = []
        n_reasons = self.settings.reasons_per_item
        collab = hybrid[1] if hybrid is not None else pool.model if pool is not None else None
        history_ids = [h.item_id for h in history]
        together = None
        if collab is not None:  # on the pool path, from the neighbour lists its ranking used
            lists = self.settings.pool_neighbours if hybrid is None else None
            together = collab.together_many(history_ids, [ids[j] for j in order], neighbours=lists)
        for rank, j in enumerate(order, start=1):
            item = catalog[ids[j]]
            because = explain(
                cand[j], history, hist_vectors, weights, catalog, n_reasons, together[rank - 1] if together else None
            )
            recs.append(Recommendation(item, float(relevance[j]), rank, because, score_kind=score_kind))
        if collab is not None and hybrid is None:  # the pool path's lists hold a pair in either's list only:
            recs = _exact_counts(collab, recs)  # the reasons shown get the exact count all the same
        if not recs and relax and understood is not None and has_hard_constraints(understood):
            # nothing meets the ask's hard constraints: say so, and answer without them
            relaxed = self.recommend(
                user_id,
                understood.soft or None,
                k,
                None,
                filters=filters,
                blurbs=blurbs,
                surprise=surprise,
                relax=False,
            )
            relaxed.query = query
            relaxed.understood = understood
            relaxed.understood_text = understood.describe({i: it.title for i, it in catalog.items()})
            relaxed.relaxed = f"nothing in the catalog is {relaxed.understood_text}; showing the closest without that"
            return relaxed

        # 5. blurbs
        if blurbs and self.writer is not None and recs:
            recs = self.writer.write([(catalog[h.item_id], h) for h in history], recs, catalog)
        logger.debug("recommend(%s) %s in %.1f ms", user_id, strategy, (time.perf_counter() - started) * 1e3)
        text = understood.describe({i: it.title for i, it in catalog.items()}) if understood is not None else None
        return Recommendations(
            recs, user_id=user_id, query=query, strategy=strategy, understood=understood, understood_text=text
        )

    def stream(
        self,
        user_id: str,
        query: str | None = None,
        k: int | None = None,
        category: str | None = None,
        *,
        blurbs: bool = True,
        **options: Any,
    ) -> Iterator[Recommendations | BlurbUpdate]:
        """``recommend``, streamed: first the ``Recommendations`` (no blurbs yet), then, if
        ``blurbs`` and a writer is set, ``BlurbUpdate``s as each blurb is written, item by
        item; each item's last update carries the finished recommendation.

        Args:
            user_id, query, k, category: as for ``recommend``.
            blurbs: stream blurbs after the list.
            **options: the other keyword arguments of ``recommend`` (``previous``, ``context``, ...).

        Example:
            >>> for event in rec.stream("u1", "a cosy mystery", k=3):
            ...     print(event.text if isinstance(event, BlurbUpdate) else [r.item.title for r in event])
        """
        recs = self.recommend(user_id, query, k, category, blurbs=False, **options)
        yield recs
        if blurbs and self.writer is not None and recs:
            yield from self.writer.stream(self.history(user_id), recs, self.storage.items())

    def warm_up(self, *, blurbs: bool = True) -> None:
        """Load the index, the encoder and (with ``blurbs``, when one is available) the
        generator now, so a server's first visitor does not wait for them."""
        users = self.users()
        if users:
            self.recommend(users[0], k=1, blurbs=False)
        self.embedder.encode(["warm up"], show_progress=False)
        if blurbs and self.writer is not None:
            self.writer.warm_up()

    def catalog(self) -> Mapping[str, Item]:
        """Every catalog item by id (read-only; cached until the next ingest)."""
        return MappingProxyType(self.storage.items())

    def popularity(self) -> Mapping[str, int]:
        """Item id -> how many users have it in their history."""
        if self._popularity is None:
            self._popularity = self.storage.popularity()
        return MappingProxyType(self._popularity)

    # -- the write path: recbot.index.Index --
    def ingest(self, path: str | Path | None, **options: Any) -> IngestReport:
        """Ingest a catalog and/or interactions into this recommender's data dir
        (``Index.ingest``: ``fmt``, ``interactions``, ``strict``, ``holdout_last``, ``tune``);
        this process sees the new index at once. When the catalog or the interactions
        changed, the hybrid's weights are chosen again (``tune``) unless ``tune=False``."""
        report = self.index.ingest(path, **options)
        self._reload_if_changed()
        return report

    def train_generator(self, config: TrainConfig | None = None, *, out_dir: str | Path | None = None) -> TrainReport:
        """Train the blurb generator on this data dir's catalog and interactions, save it
        to ``DATA_DIR/generator`` (or ``out_dir``), and use it from now on."""
        from recbot.generation.writer import LazyWriter

        self._reload_if_changed()
        report = self.index.train_generator(config, out_dir=out_dir)
        if out_dir is None:
            self.writer = LazyWriter(self.settings)  # pick up the new model on the next blurb
        return report

    def has_generator(self) -> bool:
        """Whether a generator can be resolved (configured, trained here, or cached gpt2)."""
        from recbot.errors import ModelNotFoundError
        from recbot.generation.writer import resolve_generator

        try:
            resolve_generator(self.settings)
        except ModelNotFoundError:
            return False
        return True

    def tune(self, *, show_progress: bool = True) -> HybridWeights:
        """Choose the hybrid's blend weights on the stored interactions and store them
        with the index (``Index.tune``). ``ingest`` calls this when anything changed."""
        return self.index.tune(show_progress=show_progress)

    def hybrid_weights(self) -> HybridWeights:
        """The blend weights ``recommend`` uses (stored by ``tune``; defaults before)."""
        return self.index.hybrid_weights()

    def add_feedback(self, user_id: str, item_id: str, liked: bool) -> None:
        """Thumbs up adds the item to the user's history; thumbs down hides it for good.
        The next call here (or in another process) refits the collaborative model."""
        self.index.add_feedback(user_id, item_id, liked)

    def forget(self, user_id: str) -> ForgetReport:
        """Forget a user (``Index.forget``): every row of theirs goes, the collaborative model
        is refitted on the next call, and a generator trained on their reviews is marked
        stale; the served generator is reloaded on the next blurb."""
        from recbot.generation.writer import LazyWriter

        report = self.index.forget(user_id)
        if report.generator_stale and isinstance(self.writer, LazyWriter):
            self.writer = LazyWriter(self.settings)  # its fluency corpus changed
        self._ask_vectors.clear()  # asks are not per user, but nothing typed before forget is kept
        return report

    def remove_from_history(self, user_id: str, item_id: str) -> None:
        """Forget one item from a user's history (it may be recommended again)."""
        self.index.remove_from_history(user_id, item_id)

    # -- reading --
    def history(self, user_id: str) -> list[tuple[Item, Interaction]]:
        catalog = self.storage.items()
        return [(catalog[h.item_id], h) for h in self.storage.history(user_id) if h.item_id in catalog]

    def users(self) -> list[str]:
        return self.storage.users()

    def categories(self) -> list[str]:
        """The catalog's categories, sorted."""
        return sorted(self._known_categories(self.storage.items()))

    def interpret(self, query: str, previous: Sequence[str] = ()) -> Interpretation:
        """How ``recommend`` reads ``query``: its hard constraints, anchors and soft text
        (``recbot.ask``), with this catalog's names and the BERT encoder for words the
        catalog does not spell out ("nothing animated" -> tag "animation").

        Args:
            query: the ask as typed.
            previous: item ids of the previous answer, for follow-ups ("not that one").
        """
        self._reload_if_changed()
        catalog = self.storage.items()
        if self._ask_index is None:
            self._ask_index = AskIndex(catalog.values(), similar=self._name_similarity)
        return interpret(query, self._ask_index, previous=previous)

    # -- internals --
    def _interpret(
        self,
        query: str,
        catalog: Mapping[str, Item],
        previous: Sequence[str],
        exclude_tags: Sequence[str] = (),
        exclude_categories: Sequence[str] = (),
        like: Sequence[str] = (),
    ) -> Interpretation | None:
        """The ask's interpretation merged with the structured constraints; None for neither."""
        if not query.strip() and not (exclude_tags or exclude_categories or like):
            return None
        understood = self.interpret(query, previous)
        anchors = list(understood.anchors)
        for ref in like:  # an item id, else a title as a user would type it
            found = (ref,) if ref in catalog else self.interpret(f"like {ref}").anchors
            if not found:
                raise UnknownItemError(f"no catalog item is called or has the id {ref!r}")
            anchors += [a for a in found if a not in anchors]
        merged = replace(
            understood,
            exclude_tags=tuple(dict.fromkeys([*understood.exclude_tags, *exclude_tags])),
            exclude_categories=tuple(
                dict.fromkeys(
                    [
                        *understood.exclude_categories,
                        *(self._canonical_category(c, catalog) for c in exclude_categories),
                    ]
                )
            ),
            anchors=tuple(anchors),
        )
        if merged != understood:  # structured fields say something even when the text is vague
            merged = replace(merged, vague=False, informativeness=max(merged.informativeness, 0.5))
        return merged

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The encoder, with its failures as ``EncoderError`` (a clear cause, never a stray
        traceback). Asks repeat ("something fun", "a gift"): the last ``_ASK_CACHE`` texts'
        vectors are kept (the encoder is deterministic, so the answer is the same)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._ask_vectors]
        if missing:
            try:
                encoded = self.embedder.encode(missing, show_progress=False)
            except RecbotError:
                raise
            except Exception as exc:
                raise EncoderError(f"the encoder failed on the ask ({type(exc).__name__}: {exc})") from exc
            with self._cache_lock:
                for text, vec in zip(missing, encoded, strict=True):
                    self._ask_vectors[text] = vec
                while len(self._ask_vectors) > _ASK_CACHE:
                    self._ask_vectors.pop(next(iter(self._ask_vectors)))
        ready = [v for v in (self._ask_vectors.get(t) for t in texts) if v is not None]
        if len(ready) < len(texts):  # evicted meanwhile by another thread: encode directly
            return self.embedder.encode(texts, show_progress=False)
        return np.stack(ready)

    def _name_similarity(self, phrase: str, names: Sequence[str]) -> list[float]:
        """BERT cosine of ``phrase`` to each of ``names`` (category or tag names, embedded once),
        for the ask interpreter's type words and negated phrases."""
        missing = [n for n in dict.fromkeys(names) if n not in self._name_vectors]
        if missing:
            for name, vec in zip(missing, self._encode(missing), strict=True):
                self._name_vectors[name] = vec
        vec = self._encode([phrase])[0]
        return [float(self._name_vectors[n] @ vec) for n in names]

    def _avoid_vector(self, understood: Interpretation | None) -> np.ndarray | None:
        """The mean embedding of the ask's negated free phrases ("nothing too violent"); None if none."""
        if understood is None or not understood.avoid_text:
            return None
        vec = np.mean(self._encode(list(understood.avoid_text)), axis=0)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else None

    def _ask_vector(self, understood: Interpretation, avoid: np.ndarray | None = None) -> np.ndarray | None:
        """The soft text's embedding plus the anchors' own item vectors (a title steers
        by what the item is, not by the words of its title), pushed away from ``avoid``;
        None for a vague ask."""
        parts: list[np.ndarray] = []
        if understood.soft:
            parts.append(self._encode([understood.soft])[0])
        anchors = self.store.get_vectors(list(understood.anchors)) if understood.anchors else {}
        if anchors:
            parts.append(np.mean(np.stack(list(anchors.values())), axis=0))
        if avoid is not None:
            parts.append(-AVOID_PUSH * avoid)
        if not parts:
            return None
        vec = np.sum(np.stack(parts), axis=0)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else None

    def _canonical_category(self, category: str, catalog: Mapping[str, Item]) -> str:
        known = self._known_categories(catalog)
        if category in known:
            return category
        folded = {c.casefold(): c for c in known}
        if category.casefold() in folded:
            return folded[category.casefold()]
        raise FilterError(f"unknown category {category!r}; the catalog has {sorted(known)!r}")

    def _known_categories(self, catalog: Mapping[str, Item]) -> frozenset[str]:
        if self._categories is None or self._categories[0] is not catalog:  # once per catalog read
            self._categories = (catalog, frozenset(item.category for item in catalog.values() if item.category))
        return self._categories[1]

    def _reload_if_changed(self) -> None:
        token = self.storage.change_token()
        if token == self._change_token:  # nothing committed anywhere since the last look
            return
        self._change_token = token
        version = self.storage.get_meta("version")
        if version != self._version:
            self._version = version
            self.store.refresh()
            self.storage.invalidate()
            self._popularity = None
            self._collab = None
            self._pool = None
            self._categories = None
            self._ask_index = None
        interactions = self.storage.get_meta("interactions")
        if interactions != self._interactions:  # the models catch up on use (``_caught_up``)
            self._interactions = interactions
            self._popularity = None

    def _review_vectors(self, user_id: str) -> dict[str, np.ndarray]:
        """The user's embedded reviews by item id (cached at ingest)."""
        return {item: vector for item, (_hash, vector) in self.storage.review_vectors(user_id).items()}

    def _hybrid(self) -> tuple[Snapshot, CollabModel] | None:
        """The collaborative model over the exactly searched items, once two users have
        interactions; None otherwise (beyond ``exact_search_max_items`` items, or with
        ``hybrid_pool``: then ``_pool_model`` ranks)."""
        view = self.store.exact_view()
        if view is None or self.settings.hybrid_pool:
            return None
        with self._model_lock:
            held = self._collab
            model, seq = self._caught_up(held[1:] if held is not None and held[0] is view else None, view.ids)
            self._collab = (view, model, seq)
        return (view, model) if model.users >= 2 else None

    def _caught_up(self, held: tuple[CollabModel, int] | None, items: Sequence[str]) -> tuple[CollabModel, int]:
        """``held`` (a model and the interaction log's position it reflects) brought up to
        the stored interactions: updated with the histories of the users changed since
        (``CollabModel.update``, equal to a refit), or fitted afresh when there is none, a
        user was forgotten, or more than ``UPDATE_MAX_USERS`` (or a tenth of all) changed."""
        if held is not None:
            model, seq = held
            latest, users = self.storage.interaction_changes(seq)
            if latest == seq:
                return held
            if users is not None and len(users) <= max(UPDATE_MAX_USERS, model.users // 10):
                started = time.perf_counter()
                model = model.update({u: self.storage.history(u) for u in users})
                logger.debug(
                    "updated the collaborative model for %d user(s) in %.3f s",
                    len(users),
                    time.perf_counter() - started,
                )
                return model, latest
        seq = self.storage.interaction_seq()  # before the read: what lands after is replayed
        return CollabModel.fit(self.storage.histories(), items), seq

    def _hybrid_candidates(
        self,
        hybrid: tuple[Snapshot, CollabModel],
        r: _Ranking,
    ) -> tuple[list[str], np.ndarray]:
        history, profile, ask, filters, exclude = r.history, r.profile, r.ask, r.filters, r.exclude
        anchors, tags, catalog = r.anchors, r.tags, r.catalog
        view, model = hybrid
        ask_scores = None if ask is None else view.matrix @ ask
        if ask_scores is not None and (anchors or tags):
            ask_scores = with_facts(view, model, ask_scores, anchors, tags, catalog or {})
        scores = score_user(
            model,
            self.hybrid_weights().weights,
            history,
            view.matrix @ profile,
            ask_scores,
            r.ask_weight,
        ).astype(np.float64)
        allowed = view.rows_where(filters) if filters else None
        if allowed is not None:
            masked = np.full_like(scores, -np.inf)
            masked[allowed] = scores[allowed]
            scores = masked
        scores[[view.row[i] for i in exclude if i in view.row]] = -np.inf
        n = min(self.settings.candidates, int(np.isfinite(scores).sum()))
        if n == 0:
            return [], np.zeros(0)
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties by row
        return [view.ids[row] for row in top], scores[top]

    def _pool_model(self) -> _Pool | None:
        """The collaborative model over every catalog item, for the pool path (beyond
        ``exact_search_max_items`` items, or with ``hybrid_pool``), with its neighbour
        lists built; None below the threshold, or before two users have interactions."""
        if not self.settings.hybrid_pool and self.store.exact_view() is not None:
            return None
        with self._model_lock:
            pool = self._pool
            if pool is None:
                items = sorted(self.storage.items())
                # the model ingest saved, brought up to date through the log; else fitted here
                model, seq = self._caught_up(self.index.saved_collab(items), items)
                # the fixed sample whose cosines stand in for the catalog's (pool_scores)
                sample = pool_sample(items)
                vectors = self.store.get_vectors(sample)
                sample = [i for i in sample if i in vectors]
                matrix = np.stack([vectors[i] for i in sample]) if sample else np.zeros((0, 1), dtype=np.float32)
                rows = np.array([model.index[i] for i in sample], dtype=np.int64)
                pool = _Pool(model, seq, rows, matrix)
            else:
                model, seq = self._caught_up((pool.model, pool.seq), pool.model.items)
                pool = _Pool(model, seq, pool.sample_rows, pool.sample_matrix)
            pool.model.neighbour_lists(self.settings.pool_neighbours)  # built here, once, not by a request
            self._pool = pool
        return pool if pool.model.users >= 2 else None

    def _pool_candidates(
        self,
        pool: _Pool,
        r: _Ranking,
    ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        """The hybrid without every item's score: candidates are the union of the
        ``pool_size`` nearest items to the profile (and to the ask) on the ANN index, the
        best of each weighted collaborative component, the most popular, and, for an ask
        that names titles or tags, the best by those facts; they are scored by the served
        blend (``hybrid.pool_scores``). Item-kNN finds candidates through each history
        item's top ``pool_neighbours`` neighbour list and scores them exactly
        (``CollabModel.knn_at``), z-scored by the sample. Returns the best ``candidates``
        ids, their scores, and their vectors."""
        history, profile, ask, filters, exclude = r.history, r.profile, r.ask, r.filters, r.exclude
        anchors, tags, catalog, ask_weight = r.anchors, r.tags, r.catalog, r.ask_weight
        model, sample_rows, sample_matrix = pool.model, pool.sample_rows, pool.sample_matrix
        weights = self.hybrid_weights().weights
        n = self.settings.pool_size
        parts = model.scores([history], ease=bool(weights.get("ease")), neighbours=self.settings.pool_neighbours)
        parts = {name: m[0] for name, m in parts.items()}
        facts = None
        if ask is not None and (anchors or tags):

            def rows_where(f: Mapping[str, Any]) -> list[int]:
                return [model.index[i] for i in self.store.ids_where(f) if i in model.index]

            facts = fact_scores(model, anchors, tags, catalog or {}, rows_where, len(model.items))
        with_facts = parts if facts is None else {**parts, "facts": facts}
        rows_found = pool_rows(with_facts, {**weights, "facts": 1.0}, n, model=model)
        found = {model.items[j] for j in rows_found}
        for target in (profile, ask):
            if target is not None:
                found.update(h.id for h in self.store.search(target, n, filters=filters or None, exclude=exclude))
        allowed = set(self.store.ids_where(filters)) if filters else None
        ids = sorted(i for i in found if i in model.index and i not in exclude and (allowed is None or i in allowed))
        vectors = self.store.get_vectors(ids)
        ids = [i for i in ids if i in vectors]
        if not ids:
            return [], np.zeros(0), {}
        matrix = np.stack([vectors[i] for i in ids])
        rows = np.array([model.index[i] for i in ids], dtype=np.int64)
        ask_scores = sample_ask = None
        if ask is not None:  # the ask's z-scored cosine (the sample's spread), plus its facts
            sample_cos = sample_matrix @ ask
            mean, std = float(sample_cos.mean()), float(sample_cos.std()) or 1.0
            ask_scores, sample_ask = (matrix @ ask - mean) / std, (sample_cos - mean) / std
            if facts is not None:
                ask_scores, sample_ask = ask_scores + facts[rows], sample_ask + facts[sample_rows]
        # item-kNN at the candidates and the sample, exactly: the lists only found candidates
        knn = [name for name in KNN_COMPONENTS if weights.get(name)]
        exact = model.knn_at(history, np.concatenate([rows, sample_rows])) if knn else {}
        known = {name: (exact[name][: len(rows)], exact[name][len(rows) :]) for name in knn}
        scores = pool_scores(
            parts,
            weights,
            rows,
            matrix @ profile,
            sample_rows,
            sample_matrix @ profile,
            ask_scores,
            sample_ask,
            ask_weight,
            known=known,
        )
        top = np.lexsort((np.arange(len(ids)), -scores))[: self.settings.candidates]  # best first, ties by id
        return [ids[j] for j in top], scores[top], {ids[j]: matrix[j] for j in top}

    def _popular_candidates(
        self, catalog: Mapping[str, Item], filters: Mapping[str, Any], exclude: frozenset[str]
    ) -> tuple[list[str], np.ndarray]:
        """The most popular catalog items that match ``filters``, ``exclude`` left out,
        most popular first (ties by id). The catalog's order is sorted once per popularity
        count (at 1M items a sort per request took 1.15 s), then read until enough match."""
        if self._popularity is None:
            self._popularity = self.storage.popularity()
        pop = self._popularity
        cached = self._popular_order
        if cached is None or cached[0] is not pop or cached[1] is not catalog:
            cached = self._popular_order = (pop, catalog, sorted(catalog, key=lambda i: (-pop.get(i, 0), i)))
        allowed = set(self.store.ids_where(filters)) if filters else None
        wanted = (i for i in cached[2] if i not in exclude and (allowed is None or i in allowed))
        ids = list(itertools.islice(wanted, self.settings.candidates))
        top = max((pop.get(i, 0) for i in ids), default=0) or 1
        return ids, np.array([pop.get(i, 0) / top for i in ids])


def _exact_counts(model: CollabModel, recs: list[Recommendation]) -> list[Recommendation]:
    """``recs`` with each reason's "others have both" count exact (``users_with_both``),
    where the neighbour lists the pool path reads had none for the pair."""
    pairs = [(r.item.id, b.item_id) for r in recs for b in r.because if not b.also_liked_by]
    if not pairs:
        return recs
    counts = iter(model.users_with_both(pairs))
    return [
        replace(r, because=tuple(b if b.also_liked_by else replace(b, also_liked_by=next(counts)) for b in r.because))
        for r in recs
    ]


@dataclass(frozen=True)
class _Pool:
    """The pool path's collaborative model, the interaction log's position it reflects,
    and the fixed sample of items (rows, vectors) whose scores stand in for the catalog's."""

    model: CollabModel
    seq: int
    sample_rows: np.ndarray
    sample_matrix: np.ndarray


@dataclass(frozen=True)
class _Ranking:
    """What the hybrid ranks with, for one request."""

    history: Sequence[Interaction]
    profile: np.ndarray
    ask: np.ndarray | None
    filters: Mapping[str, Any]
    exclude: frozenset[str]
    ask_weight: float
    anchors: Sequence[str]
    tags: Sequence[str]
    catalog: Mapping[str, Item]


def open_storage(settings: Settings) -> Storage:
    return Storage(Path(settings.data_dir) / "recbot.sqlite3")


def open_store(settings: Settings) -> ChromaStore:
    client = make_client(
        None if settings.chroma_host else Path(settings.data_dir) / "chroma",
        host=settings.chroma_host,
        port=settings.chroma_port,
    )
    return ChromaStore(
        client,
        settings.collection,
        ef_search=settings.hnsw_ef_search,
        max_neighbors=settings.hnsw_max_neighbors,
        exact_max_items=settings.exact_search_max_items,
        vector_cache_items=settings.vector_cache_items,
    )


def make_embedder(settings: Settings) -> LazyEmbedder:
    return LazyEmbedder(
        settings.encoder,
        device=settings.device,
        batch_size=settings.encoder_batch_size,
        max_length=settings.encoder_max_length,
        backend=settings.encoder_backend,
        onnx_dir=Path(settings.data_dir) / "encoder-onnx",
        workers=settings.encoder_workers,
    )
