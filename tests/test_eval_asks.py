"""Known-answer tests for the ask constraint checks (pure: no models, no I/O beyond the bundled file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recbot
from recbot.eval.asks import AskCase, check, embedding_only_interpretation, generated_cases, load_cases
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


GENRES = ("Comedy", "Romance", "Horror", "Sci-Fi", "War", "Drama")
MOVIES = {
    item.id: item
    for item in [
        Item(str(n), f"Movie {word} ({1990 + n})", category=tags[0], tags=tags)
        for n, (word, tags) in enumerate(
            [
                ("Alpha", ("Comedy", "Romance")),
                ("Bravo", ("Comedy", "Drama", "sweet")),
                ("Charlie", ("Horror", "Sci-Fi")),
                ("Delta", ("Drama", "War")),
                ("Echo", ("Comedy", "Horror")),
                ("Foxtrot", ("Romance", "Drama")),
                ("Golf", ("Sci-Fi", "War", "Drama")),
                ("Hotel", ("Horror",)),
                ("India", ("Comedy", "Sci-Fi")),
                ("Juliet", ("Romance", "War")),
            ],
            1,
        )
    ]
}
USERS = ["u1", "u2", "u3"]


def test_generated_cases_are_deterministic_and_use_catalog_tags_and_ids() -> None:
    popularity = {"1": 9, "3": 7, "7": 5}
    cases = generated_cases(MOVIES, USERS, n=40, seed=3, popularity=popularity, anchor_pool=3)
    assert cases == generated_cases(MOVIES, USERS, n=40, seed=3, popularity=popularity, anchor_pool=3)
    assert cases != generated_cases(MOVIES, USERS, n=40, seed=4, popularity=popularity, anchor_pool=3)
    assert 30 <= len(cases) <= 40 and len({c.ask for c in cases}) == len(cases)
    assert {c.user for c in cases} == set(USERS)
    tags = {t for item in MOVIES.values() for t in item.tags}
    for case in cases:
        assert set(case.exclude_tags) <= set(GENRES) <= tags, case  # exact spelling, genres only
        assert case.anchor is None or case.anchor in popularity, case
        assert not (case.category or case.exclude_categories or case.exclude_items or case.vague), case
        assert case.exclude_tags or case.anchor, case
        assert case.ask == case.ask.lower() or case.anchor, case
        if case.anchor and case.exclude_tags:  # "like X but no <a genre of X>"
            assert case.exclude_tags[0] in MOVIES[case.anchor].tags
            assert case.exclude_tags[0] != MOVIES[case.anchor].category
    assert {bool(c.anchor) for c in cases} == {True, False}
    assert any(" but no " in c.ask or "but without" in c.ask for c in cases)
    assert any("Movie Alpha" in c.ask and "1991" not in c.ask for c in cases if c.anchor == "1")


def _compliant(case: AskCase) -> list[str]:
    """A hand-picked answer: no excluded tag, never the anchor, top item sharing a category or tag with it."""
    excluded = set(case.exclude_tags)
    ok = [i for i, item in MOVIES.items() if i != case.anchor and not excluded & set(item.tags)]
    if case.anchor is not None:
        anchor = MOVIES[case.anchor]
        ok.sort(key=lambda i: MOVIES[i].category != anchor.category and not set(MOVIES[i].tags) & set(anchor.tags))
    return ok[:2]


def test_generated_cases_pass_a_compliant_answer_and_fail_a_violating_one() -> None:
    cases = generated_cases(MOVIES, USERS, n=40, seed=0, popularity={"1": 3, "7": 2, "5": 1})
    for case in cases:
        answer = _compliant(case)
        assert answer, case
        good = Recommendations(
            [Recommendation(MOVIES[i], 1.0, n + 1) for n, i in enumerate(answer)],
            user_id="u",
            query="q",
            strategy="profile",
        )
        assert check(case, good, MOVIES) == [], case
        bad_ids = list(answer)
        if case.exclude_tags:
            bad_ids.append(next(i for i, item in MOVIES.items() if case.exclude_tags[0] in item.tags))
        if case.anchor is not None:
            bad_ids.append(case.anchor)
        bad = Recommendations(
            [Recommendation(MOVIES[i], 1.0, n + 1) for n, i in enumerate(bad_ids)],
            user_id="u",
            query="q",
            strategy="profile",
        )
        found = set(kinds(check(case, bad, MOVIES)))
        assert ("exclude_tag" in found) == bool(case.exclude_tags), case
        assert ("anchor_recommended" in found) == (case.anchor is not None), case


def test_generated_cases_on_a_catalog_without_genre_categories_use_frequent_tags() -> None:
    cases = generated_cases(CATALOG, ["u"], n=10, seed=1)
    tags = {t for item in CATALOG.values() for t in item.tags}
    assert cases and all(set(c.exclude_tags) <= tags for c in cases)
    assert generated_cases(CATALOG, [], n=10) == [] and generated_cases(CATALOG, ["u"], n=0) == []
