"""Datasets and the leave-last-out split of ../shared/data/README.md.

For each user, interactions sort by (timestamp, item id) — MovieLens ids as integers,
Amazon asins as strings — the last one is the test item, the second-to-last the
validation item (for choosing weights), the rest the training history. Every item that
appears anywhere in the interaction file is ranked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbot.catalog import amazon_item, read_amazon, read_movielens
from recbot.errors import ConfigError
from recbot.types import Interaction, Item

__all__ = ["Dataset", "Split", "load_dataset"]


@dataclass
class Split:
    """Training histories and one held-out item per user."""

    train: dict[str, list[Interaction]]  # per user, in time order
    held_out: dict[str, Interaction]
    items: dict[str, Item]  # items as built without any held-out interaction

    @property
    def item_text(self) -> dict[str, str]:
        return {i: item.text for i, item in self.items.items()}


@dataclass
class Dataset:
    name: str
    spec: str
    items: list[str]  # the ranking universe, in id order
    users: list[str]
    test: Split
    valid: Split
    catalog: dict[str, Item] = field(default_factory=dict)

    @property
    def protocol(self) -> dict[str, Any]:
        return {
            "split": "leave-last-out by (timestamp, item id); validation = second-to-last",
            "ranked_items": len(self.items),
            "users": len(self.users),
            "training_items_excluded": True,
            "test_interactions": len(self.test.held_out),
        }


def _split(
    by_user: dict[str, list[Interaction]],
    drop_last: int,
    text_for: Callable[[dict[str, list[Interaction]]], dict[str, Item]],
) -> Split:
    train: dict[str, list[Interaction]] = {}
    held: dict[str, Interaction] = {}
    for user, hist in by_user.items():
        if len(hist) < drop_last + 1:
            continue
        cut = len(hist) - drop_last
        train[user] = hist[:cut]
        held[user] = hist[cut]
    return Split(train, held, text_for(train))


def _build(
    name: str,
    spec: str,
    catalog: dict[str, Item],
    interactions: list[Interaction],
    sort_key: Callable[[str], Any],
    text_for: Callable[[dict[str, list[Interaction]]], dict[str, Item]],
) -> Dataset:
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for it in interactions:
        by_user[it.user_id].append(it)
    for hist in by_user.values():
        hist.sort(key=lambda h: (h.timestamp or 0, sort_key(h.item_id)))
    items = sorted({it.item_id for it in interactions}, key=sort_key)
    users = sorted(by_user, key=sort_key)
    test = _split(by_user, 1, text_for)
    valid = _split(by_user, 2, text_for)
    return Dataset(name, spec, items, users, test, valid, catalog)


def load_dataset(spec: str, *, data_dir: str | Path | None = None) -> Dataset:
    """``movielens:DIR``, ``amazon:FILE`` or ``recbot`` (the ingested data dir)."""
    kind, _, path = spec.partition(":")
    if kind == "movielens":
        result = read_movielens(Path(path))
        catalog = {i.id: i for i in result.items}
        return _build("movielens", spec, catalog, result.interactions, int, lambda _train: catalog)
    if kind == "amazon":
        result = read_amazon(Path(path))
        reviews: dict[tuple[str, str], str] = {(i.user_id, i.item_id): i.review or "" for i in result.interactions}

        def text_from_training(train: dict[str, list[Interaction]]) -> dict[str, Item]:
            # item text from training-split reviews only: a held-out review never leaks
            summaries: dict[str, list[str]] = defaultdict(list)
            bodies: dict[str, list[str]] = defaultdict(list)
            for hist in train.values():
                for h in hist:
                    summary, _, body = reviews[(h.user_id, h.item_id)].partition(". ")
                    summaries[h.item_id].append(summary)
                    bodies[h.item_id].append(body)
            asins = {i.item_id for i in result.interactions}
            return {a: amazon_item(a, summaries[a], bodies[a]) for a in asins}

        catalog = {i.id: i for i in result.items}
        return _build("amazon", spec, catalog, result.interactions, str, text_from_training)
    if kind == "recbot":
        from recbot.config import Settings
        from recbot.recommender import open_storage

        storage = open_storage(Settings.create(data_dir=data_dir))
        catalog = storage.items()
        interactions = [h for u in storage.users() for h in storage.history(u)]
        storage.close()
        items = dict(catalog)
        return _build("recbot", spec, items, interactions, str, lambda _train: items)
    raise ConfigError(f"unknown dataset {spec!r}; use movielens:DIR, amazon:FILE or recbot")
