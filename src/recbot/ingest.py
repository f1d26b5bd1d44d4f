"""Ingest: read -> validate -> store -> embed what changed -> upsert. Reports counts."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recbot.catalog import Format, ReadResult, RowError, read_catalog, read_interactions
from recbot.errors import CatalogError
from recbot.retrieval.embedder import BulkEncoder, Embedder
from recbot.retrieval.store import VectorStore
from recbot.storage import Storage, item_hash, text_hash
from recbot.types import Interaction, Item

__all__ = ["IngestReport", "ingest", "ingest_result"]

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    interactions: int = 0  # interactions stored by this run
    reviews_embedded: int = 0
    rejected: list[RowError] = field(default_factory=list)
    notes: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    hybrid: str = ""  # the blend weights chosen afterwards (Recommender.ingest)

    def lines(self) -> list[str]:
        out = [
            f"items: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.removed} removed; interactions: {self.interactions} stored "
            f"({self.reviews_embedded} reviews embedded); rejected: {len(self.rejected)} "
            f"rows; {self.seconds:.2f}s"
        ]
        out += [f"  rejected: {e}" for e in self.rejected]
        out += [f"  note: {e}" for e in self.notes]
        out += [self.hybrid] if self.hybrid else []
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "interactions": self.interactions,
            "reviews_embedded": self.reviews_embedded,
            "rejected": [str(e) for e in self.rejected],
            "notes": [str(e) for e in self.notes],
            "seconds": round(self.seconds, 3),
            "hybrid": self.hybrid,
        }


def ingest(
    path: str | Path | None,
    *,
    storage: Storage,
    store: VectorStore,
    embedder: Embedder,
    fmt: Format = "auto",
    interactions: str | Path | None = None,
    strict: bool = False,
    holdout_last: bool = False,
) -> IngestReport:
    """Read a catalog (and/or an interactions file) and bring the index up to date.

    The catalog at ``path`` is taken as complete: items that are no longer in it are
    removed. Items whose text (and encoder) did not change are not re-embedded.

    Raises:
        CatalogError: a file cannot be read at all; or, with ``strict``, any row was
            rejected (then nothing is written; ``exc.rejected`` lists the rows).
    """
    start = time.perf_counter()
    result = read_catalog(path, fmt, holdout_last=holdout_last) if path is not None else ReadResult()
    if interactions is not None:
        result.merge(read_interactions(interactions))
    report = ingest_result(
        result, storage=storage, store=store, embedder=embedder, catalog_given=path is not None, strict=strict
    )
    report.seconds = time.perf_counter() - start
    return report


def ingest_result(
    result: ReadResult,
    *,
    storage: Storage,
    store: VectorStore,
    embedder: Embedder,
    catalog_given: bool = True,
    strict: bool = False,
) -> IngestReport:
    """Store what a reader returned (see ``ingest``)."""
    report = IngestReport(rejected=list(result.rejected), notes=list(result.notes))
    # Validate everything before writing anything, so --strict can refuse cleanly.
    known = {item.id for item in result.items} if catalog_given else set(storage.item_hashes())
    valid: list[Interaction] = []
    for interaction, (file, line) in zip(result.interactions, result.interaction_rows, strict=True):
        if interaction.item_id in known:
            valid.append(interaction)
        else:
            report.rejected.append(RowError(file, line, "item_id", f"{interaction.item_id!r} is not in the catalog"))
    if strict and report.rejected:
        raise CatalogError(
            f"{len(report.rejected)} row(s) rejected; nothing was ingested (--strict)", rejected=report.rejected
        )
    encoder_id = embedder.model_id
    previous_encoder = storage.get_meta("encoder")
    if previous_encoder is not None and previous_encoder != encoder_id and store.count():
        logger.warning("encoder changed from %s to %s: re-embedding everything", previous_encoder, encoder_id)
        store.delete(store.ids())
        storage.delete_items(list(storage.item_hashes()))
    # encoder workers, where the embedder asks for them, serve items and reviews and stop here
    with BulkEncoder(embedder) as bulk:
        if catalog_given:
            _sync_items(result.items, storage, store, bulk, report)
        report.interactions = storage.upsert_interactions(valid)
        report.reviews_embedded = _embed_reviews(valid, storage, bulk)
    storage.set_meta("encoder", encoder_id)
    if report.added or report.updated or report.removed or report.interactions:
        storage.set_meta("version", uuid.uuid4().hex)  # tells running processes to reload
    return report


def _sync_items(
    items: list[Item], storage: Storage, store: VectorStore, bulk: BulkEncoder, report: IngestReport
) -> None:
    stored = storage.item_hashes()
    if store.count() != len(stored):  # Chroma and SQLite disagree (e.g. an interrupted run)
        in_chroma = set(store.ids())
        stored = {i: h for i, h in stored.items() if i in in_chroma}
    hashes = {item.id: item_hash(item, bulk.embedder.model_id) for item in items}
    changed = [item for item in items if stored.get(item.id) != hashes[item.id]]
    report.added = sum(1 for item in changed if item.id not in stored)
    report.updated = len(changed) - report.added
    report.unchanged = len(items) - len(changed)
    if changed:
        _embed_and_upsert(changed, hashes, store, bulk, storage)
    gone = sorted(set(storage.item_hashes()) - set(hashes))
    if gone:
        store.delete(gone)
        storage.delete_items(gone)
    report.removed = len(gone)


def _embed_and_upsert(
    items: list[Item], hashes: dict[str, str], store: VectorStore, bulk: BulkEncoder, storage: Storage
) -> None:
    """Encode in chunks and upsert each chunk on a background thread while the next one
    encodes: the Chroma write then costs (almost) no wall time beside the encoder. With
    encoder workers, the next chunks encode in them meanwhile (``BulkEncoder``); the
    chunks still come back, and are written, in order.

    Resumable: a chunk is recorded in SQLite as soon as Chroma has it, so an ingest that
    is killed loses at most the chunks in flight. SQLite never names an item Chroma lacks;
    Chroma may hold a chunk SQLite does not, which the next run embeds again and upserts
    over (``_sync_items`` trusts only items both stores have).
    """
    logger.info("embedding %d items", len(items))
    size = bulk.chunk  # items encoded per step of the encode/upsert pipeline
    show = logger.getEffectiveLevel() <= logging.INFO and len(items) > size
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="recbot-upsert") as pool,
        tqdm(total=len(items), desc="Embedding", unit="item", disable=not show) as bar,
    ):
        pending: tuple[Future[None], list[Item]] | None = None

        def record(done: tuple[Future[None], list[Item]]) -> None:
            future, chunk = done
            future.result()  # surface a failed write now
            storage.upsert_items((item, hashes[item.id]) for item in chunk)

        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        encoded = bulk.map([[item.text for item in chunk] for chunk in chunks])
        for chunk, vectors in zip(chunks, encoded, strict=True):
            if pending is not None:
                record(pending)  # keep one write in flight
            future = pool.submit(
                store.upsert, [i.id for i in chunk], vectors, [_metadata(i, hashes[i.id]) for i in chunk]
            )
            pending = (future, chunk)
            bar.update(len(chunk))
        if pending is not None:
            record(pending)


def _metadata(item: Item, content_hash: str) -> dict[str, object]:
    return {
        **dict(item.metadata),
        "title": item.title,
        "category": item.category,
        "tags": list(item.tags),
        "hash": content_hash,
    }


def _embed_reviews(interactions: list[Interaction], storage: Storage, bulk: BulkEncoder) -> int:
    have = storage.review_hashes()
    todo = []
    for it in interactions:
        if it.review:
            h = text_hash(it.review, bulk.embedder.model_id)
            if have.get((it.user_id, it.item_id)) != h:
                todo.append((it.user_id, it.item_id, h, it.review))
    if todo:
        logger.info("embedding %d reviews", len(todo))
        texts = [t[3] for t in todo]
        size = bulk.chunk
        show = logger.getEffectiveLevel() <= logging.INFO and len(texts) > size
        parts = []
        with tqdm(total=len(texts), desc="Embedding reviews", unit="review", disable=not show) as bar:
            for part in bulk.map([texts[i : i + size] for i in range(0, len(texts), size)]):
                parts.append(part)
                bar.update(len(part))
        vectors = np.vstack(parts)
        storage.put_review_vectors((u, i, h, v) for (u, i, h, _), v in zip(todo, vectors, strict=True))
    return len(todo)
