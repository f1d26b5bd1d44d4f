"""Known-answer tests for the ask constraint checks (pure: no models, no I/O beyond the bundled file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recbot
from recbot.eval.asks import AskCase, check, embedding_only_interpretation, load_cases
from recbot.recommender import Recommendations
from recbot.types import Item, Recommendation

DEMO = Path(recbot.__file__).parent / "demo"

CATALOG = {
    item.id: item
    for item in [
        Item("b1", "Project Hail Mary", category="Books", tags=("science fiction", "space")),
        Item("b2", "The Shining", category="Books", tags=("horror",)),
        Item("f1", "Arrival", category="Films", tags=("science fiction", "aliens")),
        Item("f2", "Paddington 2", category="Films", tags=("cosy", "comedy")),
        Item("f3", "Hereditary", category="Films", tags=("Horror", "family")),
        Item("g1", "Catan", category="Games", tags=("board game",)),
        Item("g2", "Stardew Valley", category="Games", tags=("video game", "cosy")),
    ]
}


def recs(*ids: str, relaxed: str | None = None) -> Recommendations:
    out = Recommendations(
        [Recommendation(CATALOG[i], 1.0 - n / 10, n + 1) for n, i in enumerate(ids)],
        user_id="u",
        query="q",
        strategy="profile",
    )
    out.relaxed = relaxed
    return out


def kinds(violations: list[str]) -> list[str]:
    return [v.split(":", 1)[0] for v in violations]


def test_clean_answer_passes() -> None:
    case = AskCase("u", "a film, no horror", category="Films", exclude_tags=("horror",))
    assert check(case, recs("f1", "f2"), CATALOG) == []


def test_excluded_tag_is_caught_case_insensitively() -> None:
    case = AskCase("u", "no horror", exclude_tags=("horror",))
    assert kinds(check(case, recs("f2", "f3", "b2"), CATALOG)) == ["exclude_tag", "exclude_tag"]


def test_category_and_exclusions() -> None:
    case = AskCase("u", "a film", category="Films")
    assert kinds(check(case, recs("f1", "b1"), CATALOG)) == ["category"]
    case = AskCase("u", "not a game", exclude_categories=("Games",))
    assert kinds(check(case, recs("g1", "f1"), CATALOG)) == ["exclude_category"]
    case = AskCase("u", "not Catan", exclude_items=("g1",))
    assert kinds(check(case, recs("g2", "g1"), CATALOG)) == ["exclude_item"]


def test_anchor_must_not_be_recommended() -> None:
    case = AskCase("u", "like Project Hail Mary", anchor="b1")
    assert kinds(check(case, recs("f1", "b1"), CATALOG)) == ["anchor_recommended"]


def test_anchor_top_item_must_share_category_or_tag() -> None:
    case = AskCase("u", "like Project Hail Mary but a film", category="Films", anchor="b1")
    assert check(case, recs("f1", "f2"), CATALOG) == []  # Arrival shares "science fiction"
    assert kinds(check(case, recs("f2", "f1"), CATALOG)) == ["anchor_unlike"]  # only the top item counts
    same_category = AskCase("u", "like The Shining", anchor="b2")
    assert check(same_category, recs("b1"), CATALOG) == []  # a book, though no tag is shared


def test_vague_compares_sets_not_order() -> None:
    case = AskCase("u", "more please", vague=True)
    assert check(case, recs("f1", "f2"), CATALOG, ["f2", "f1"]) == []
    violations = check(case, recs("f1", "g1"), CATALOG, ["f1", "f2"])
    assert kinds(violations) == ["vague"]
    assert "g1" in violations[0] and "f2" in violations[0]


def test_relaxed_and_empty_answers_violate() -> None:
    case = AskCase("u", "a film", category="Films")
    assert kinds(check(case, recs("f1", relaxed="nothing matched"), CATALOG)) == ["relaxed"]
    assert kinds(check(case, recs(), CATALOG)) == ["empty"]


def test_embedding_only_interpretation_is_soft_text_only() -> None:
    understood = embedding_only_interpretation("no horror, something cosy")
    assert understood.soft == "no horror, something cosy" and understood.informativeness == 1.0
    assert not (understood.category or understood.exclude_tags or understood.anchors or understood.vague)


def test_load_cases_parses_tuples(tmp_path: Path) -> None:
    path = tmp_path / "asks.jsonl"
    path.write_text(json.dumps({"user": "u1", "ask": "no horror", "exclude_tags": ["horror"]}) + "\n\n")
    assert load_cases(path) == [AskCase("u1", "no horror", exclude_tags=("horror",))]
    path.write_text(json.dumps({"user": "u1", "ask": "x", "categroy": "Films"}) + "\n")
    with pytest.raises(ValueError, match="categroy"):
        load_cases(path)


def test_bundled_cases_refer_to_the_demo_catalog() -> None:
    cases = load_cases(DEMO / "asks.jsonl")
    assert len(cases) >= 60
    catalog = {}
    for line in (DEMO / "catalog.jsonl").read_text().splitlines():
        row = json.loads(line)
        catalog[row["id"]] = row
    users = {json.loads(line)["user_id"] for line in (DEMO / "interactions.jsonl").read_text().splitlines()}
    categories = {row["category"] for row in catalog.values()}
    tags = {t for row in catalog.values() for t in row["tags"]}
    for case in cases:
        assert case.user in users, case
        assert case.category is None or case.category in categories, case
        assert set(case.exclude_categories) <= categories, case
        assert set(case.exclude_tags) <= tags, case
        assert set(case.exclude_items) <= set(catalog), case
        assert case.anchor is None or case.anchor in catalog, case
        has_constraint = case.category or case.exclude_categories or case.exclude_tags or case.exclude_items
        assert has_constraint or case.anchor or case.vague, case
    assert len({c.user for c in cases}) == 10
    assert sum(c.vague for c in cases) >= 5 and sum(c.anchor is not None for c in cases) >= 5
