"""Known-answer tests for the ask interpreter (pure: no models, no I/O)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest

from recbot.ask import DEFAULT_SYNONYMS, AskIndex, Interpretation, interpret
from recbot.types import Item

CATALOG = [
    Item(
        "b1", "Project Hail Mary", "An astronaut wakes alone on a ship far from Earth.", "Books", ("science fiction",)
    ),
    Item("b2", "Dune", "Desert planet politics and a wild young messiah.", "Books", ("science fiction",)),
    Item("b3", "The Shining", "A family winters in an isolated hotel that wants them dead.", "Books", ("horror",)),
    Item("b4", "Wild", "A woman hikes eleven hundred miles alone after her mother dies.", "Books", ("memoir",)),
    Item("b5", "The Thursday Murder Club", "Retirees solve murders over tea.", "Books", ("cosy", "comedy")),
    Item("f1", "Dune: Part One", "Villeneuve's Dune on the big screen.", "Films", ("science fiction",)),
    Item("f2", "Amélie", "A shy waitress in Paris quietly changes her neighbours' lives.", "Films", ("comedy", "cosy")),
    Item("f3", "The Shining (1980)", "Kubrick's horror in a snowbound hotel.", "Films", ("horror",)),
    Item("f4", "The Game", "A banker's birthday present turns into a dangerous puzzle.", "Films", ("thriller",)),
    Item("g1", "The Legend of Zelda: Breath of the Wild", "Explore Hyrule in an open world.", "Games", ("video game",)),
    Item("g2", "Catan", "Trade and build settlements on an island.", "Games", ("board game", "strategy")),
    Item("g3", "Stardew Valley", "Run a farm and befriend the town.", "Games", ("video game", "cosy")),
    Item("g4", "Wingspan", "Attract birds to your wildlife preserves.", "Games", ("board game", "cosy")),
    Item("m1", "Fender Player Stratocaster", "An electric guitar for rock and blues.", "Music Gear", ("guitar",)),
]
TITLES = {item.id: item.title for item in CATALOG}
SHOWN = ("g2", "f2", "b1")  # the previous answer: Catan, Amélie, Project Hail Mary


@pytest.fixture(scope="module")
def index() -> AskIndex:
    return AskIndex(CATALOG)


# (ask, previous answer, the fields expected; fields not named must be empty)
KNOWN: list[tuple[str, Sequence[str], dict[str, Any]]] = [
    ("no horror, something cosy", (), {"exclude_tags": ("horror",), "soft": "cosy", "tags": ("cosy",)}),
    ("not a video game", (), {"exclude_tags": ("video game",)}),
    ("like Project Hail Mary but a film", (), {"category": "Films", "anchors": ("b1",)}),
    ("more please", (), {"vague": True}),
    ("surprise me", (), {"vague": True, "surprise": True}),
    ("another one", (), {"vague": True}),
    ("something like my favourites", (), {"vague": True}),
    ("whatever", (), {"vague": True}),
    (
        "a board game, no strategy",
        (),
        {"category": "Games", "tags": ("board game",), "exclude_tags": ("strategy",), "soft": "board game"},
    ),
    ("more like the second one", SHOWN, {"refers_to": (2,), "anchors": ("f2",)}),
    ("not that one", SHOWN, {"reject_previous": (1,), "exclude_items": ("g2",)}),
    ("not the last one", SHOWN, {"reject_previous": (3,), "exclude_items": ("b1",)}),
    ("number 3", SHOWN, {"refers_to": (3,), "anchors": ("b1",)}),
    ("none of those", SHOWN, {"reject_previous": (1, 2, 3), "exclude_items": SHOWN}),
    ("the first", (), {"soft": "first"}),  # no previous answer: not a follow-up
    ("another like Catan", SHOWN, {"anchors": ("g2",)}),
    ("amelie", (), {"anchors": ("f2",)}),
    ("Dune", (), {"anchors": ("b2",)}),  # the novel, not "Dune: Part One" by its short form
    ("Dune Part One", (), {"anchors": ("f1",)}),
    ("the Dune film", (), {"anchors": ("f1",)}),  # a category word next to a title picks among its namesakes
    ("the Shining film", (), {"anchors": ("f3",)}),
    ("the Zelda game", (), {"anchors": ("g1",)}),
    ("breath of the wild", (), {"anchors": ("g1",)}),
    ("Hail Mary", (), {"anchors": ("b1",)}),
    ("project hail marry", (), {"anchors": ("b1",)}),  # a typo
    ("anything but The Shining", (), {"exclude_items": ("b3",)}),
    ("nothing like The Shining", (), {"exclude_items": ("b3",)}),
    ("no horror like The Shining", (), {"exclude_tags": ("horror",), "exclude_items": ("b3",)}),
    ("something like Dune but not Dune Part One", (), {"anchors": ("b2",), "exclude_items": ("f1",)}),
    ("something about friendship", (), {"soft": "friendship"}),
    ("nothing scary", (), {"avoid_text": ("scary",)}),
    ("nothing too long or slow", (), {"avoid_text": ("long", "slow")}),
    ("no horror or comedy", (), {"exclude_tags": ("horror", "comedy")}),
    ("neither horror nor comedy", (), {"exclude_tags": ("horror", "comedy")}),
    # "and" ends a negation: a wrong hard exclusion costs more than a missed one
    ("no horror and comedy", (), {"exclude_tags": ("horror",), "tags": ("comedy",), "soft": "comedy"}),
    ("no horror something cosy", (), {"exclude_tags": ("horror",), "tags": ("cosy",), "soft": "cosy"}),
    ("I don't want horror", (), {"exclude_tags": ("horror",)}),
    ("something that isn't horror", (), {"exclude_tags": ("horror",)}),
    ("no horror films", (), {"exclude_tags": ("horror",)}),  # "films" is horror's head noun, not excluded
    ("not a film", (), {"exclude_categories": ("Films",)}),
    ("no music gear", (), {"exclude_categories": ("Music Gear",)}),
    ("something to watch", (), {"category": "Films"}),
    ("I want to play something cosy", (), {"category": "Games", "tags": ("cosy",), "soft": "cosy"}),
    ("a novel", (), {"category": "Books"}),
    ("more sci-fi", (), {"tags": ("science fiction",), "soft": "sci-fi"}),
    ("comedies please", (), {"tags": ("comedy",), "soft": "comedies"}),
    ("a game", (), {"category": "Games"}),  # never the film "The Game"
    ("the", (), {"vague": True}),
    ("a film or a book", (), {}),  # clashing categories: no filter
    ("something wild and cosy", (), {"tags": ("cosy",), "soft": "wild cosy"}),  # not the book "Wild"
    ("I loved Wild", (), {"anchors": ("b4",)}),
    ("surprise me with a film", (), {"category": "Films", "surprise": True}),
    (
        "a sci-fi film for a family night",
        (),
        {"category": "Films", "tags": ("science fiction",), "soft": "sci-fi for family night"},
    ),
]
EMPTY = {f.name: f.default for f in dataclasses.fields(Interpretation) if f.default is not dataclasses.MISSING}
EMPTY |= {"category": None, "soft": "", "vague": False, "surprise": False}


@pytest.mark.parametrize(("ask", "previous", "expected"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answers(index: AskIndex, ask: str, previous: Sequence[str], expected: dict[str, Any]) -> None:
    got = interpret(ask, index, previous=previous)
    fields = [
        "category",
        "exclude_categories",
        "exclude_tags",
        "anchors",
        "exclude_items",
        "avoid_text",
        "soft",
        "vague",
        "surprise",
        "refers_to",
        "reject_previous",
        "tags",
    ]
    want = {f: expected.get(f, EMPTY.get(f, ())) for f in fields}
    assert {f: getattr(got, f) for f in fields} == want


@pytest.mark.parametrize(
    ("ask", "previous", "line"),
    [
        ("a film, no horror, like Project Hail Mary", (), "Films, not horror, like Project Hail Mary"),
        ("no horror, something cosy", (), "not horror, cosy"),
        ("not the second one", SHOWN, "not Amélie"),
        ("more please", (), "more like your favourites"),
        ("surprise me", (), "a surprise"),
    ],
)
def test_describe(index: AskIndex, ask: str, previous: Sequence[str], line: str) -> None:
    assert interpret(ask, index, previous=previous).describe(TITLES) == line


def test_describe_unknown_id_shows_the_id(index: AskIndex) -> None:
    assert interpret("like Catan", index).describe({}) == "like g2"


def test_to_dict_is_json_with_the_documented_keys(index: AskIndex) -> None:
    d = interpret("a board game like Catan, no strategy, nothing scary", index).to_dict()
    assert json.loads(json.dumps(d)) == d
    documented = {"category", "exclude_categories", "exclude_tags", "anchors", "exclude_items", "avoid", "soft"}
    documented |= {"vague", "surprise", "refers_to"}
    assert documented <= set(d)
    assert d["category"] == "Games"
    assert d["anchors"] == ["g2"]
    assert d["exclude_tags"] == ["strategy"]
    assert d["avoid"] == ["scary"]


@pytest.mark.parametrize(
    ("ask", "informativeness"),
    [
        ("more please", 0.0),
        ("surprise me", 0.0),
        ("cosy", 0.5),  # one soft word
        ("no horror, something cosy", 0.7),  # one exclusion, one soft word
        ("a film, no horror, like Project Hail Mary, something cosy and funny", 1.0),  # capped
    ],
)
def test_informativeness(index: AskIndex, ask: str, informativeness: float) -> None:
    assert interpret(ask, index).informativeness == pytest.approx(informativeness)


def test_interpretation_is_frozen(index: AskIndex) -> None:
    got = interpret("cosy", index)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.soft = "scary"  # type: ignore[misc]


def test_shared_titles_and_ambiguous_partials() -> None:
    """A whole title shared by two items names both; a partial one that fits two names neither."""
    index = AskIndex(
        [
            Item("s1", "Star Wars: A New Hope", category="Films"),
            Item("s2", "Star Wars: The Empire Strikes Back", category="Films"),
            Item("s3", "Empire of the Sun", category="Films"),
        ]
    )
    assert interpret("like Star Wars", index).anchors == ("s1", "s2")
    got = interpret("something Empire", index)
    assert got.anchors == ()
    assert got.soft == "Empire"


class RecordingScorer:
    """A fake for the injected BERT cosine: fixed scores, and a record of what was asked."""

    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores = scores
        self.asked: list[str] = []

    def __call__(self, phrase: str, names: Sequence[str]) -> list[float]:
        self.asked.append(phrase)
        return [self.scores.get((phrase.lower(), name), 0.1) for name in names]


@pytest.mark.parametrize(
    ("ask", "expected", "asked"),
    [
        ("a funny flick", {"category": "Films", "soft": "funny"}, ["flick"]),
        ("not a flick", {"exclude_categories": ("Films",)}, ["flick"]),
        ("something to stream", {"category": "Films"}, ["something to stream"]),
        ("a film", {"category": "Films"}, []),  # the catalog's own word: no call
        ("a cosy film", {"category": "Films", "soft": "cosy"}, []),  # the head noun is known: no call
        ("a movie", {"soft": "movie"}, ["movie"]),  # below the threshold, and no synonym table
    ],
)
def test_injected_scorer_maps_type_words(ask: str, expected: dict[str, Any], asked: list[str]) -> None:
    scorer = RecordingScorer({("flick", "Films"): 0.8, ("something to stream", "Films"): 0.7, ("movie", "Films"): 0.4})
    index = AskIndex(CATALOG, synonyms={}, similar=scorer, threshold=0.5)
    got = interpret(ask, index)
    assert {k: getattr(got, k) for k in expected} == expected
    assert scorer.asked == asked


def test_injected_scorer_maps_negated_phrases_to_tags() -> None:
    scorer = RecordingScorer({("funny", "comedy"): 0.8, ("slow", "thriller"): 0.6})
    index = AskIndex(CATALOG, synonyms={}, similar=scorer, tag_threshold=0.7)
    got = interpret("nothing funny or slow", index)
    assert (got.exclude_tags, got.avoid_text) == (("comedy",), ("slow",))  # 0.6 is below the bar: text
    assert interpret("no horror", index).exclude_tags == ("horror",)  # the catalog's own tag: no call
    assert scorer.asked == ["funny", "slow"]


def test_synonyms_resolve_against_the_catalog() -> None:
    # the default table's "movie" -> "film" finds a category named differently ...
    movies = AskIndex([Item("1", "Alien", category="Movies & TV"), Item("2", "Dune", category="Books")])
    assert interpret("a movie", movies).category == "Movies & TV"
    # ... and a catalog without films ignores it
    books = AskIndex([Item("2", "Dune", category="Books")])
    assert interpret("a movie", books).category is None
    # a mapping replaces the defaults; extend them by merging
    assert interpret("a movie", AskIndex(CATALOG, synonyms={})).category is None
    flicks = AskIndex(CATALOG, synonyms={**DEFAULT_SYNONYMS, "flick": "Films"})
    assert interpret("a flick", flicks).category == "Films"
    assert interpret("a movie", flicks).category == "Films"


@pytest.mark.parametrize(("ask", "excluded"), [("nothing with comedy", "Comedy"), ("nothing from kitchen", "kitchen")])
def test_nothing_with_and_nothing_from_negate(ask: str, excluded: str) -> None:
    items = [Item("a", "Alpha", category="Comedy", tags=("Comedy",)), Item("c", "Knife", category="kitchen")]
    understood = interpret(ask, AskIndex(items))
    assert understood.exclude_categories == (excluded,) and not understood.vague


# MovieLens spells titles for sorting ("Godfather, The (1972)"), its first genre is the category
# and the others are tags; each case is a wrong answer an earlier version gave on ml-latest-small
ML = [
    Item("858", "Godfather, The (1972)", category="Crime", tags=("drama",)),
    Item("2023", "Godfather: Part III, The (1990)", category="Crime", tags=("drama", "mystery")),
    Item("t3", "Godfather Trilogy: 1972-1990, The (1992)", category="Crime", tags=("drama",)),
    Item("58559", "Dark Knight, The (2008)", category="Action", tags=("crime", "drama")),
    Item("91529", "Dark Knight Rises, The (2012)", category="Action", tags=("adventure", "crime")),
    Item("1210", "Star Wars: Episode VI - Return of the Jedi (1983)", category="Action", tags=("adventure",)),
    Item("5378", "Like Stars on Earth (Taare Zameen Par) (2007)", category="Drama"),
    Item("2329", "American History X (1998)", category="Crime", tags=("drama",)),
    Item("72", "American Pie Presents: The Book of Love (American Pie 7: The Book of Love) (2009)", category="Comedy"),
    Item("3752", "Me, Myself & Irene (2000)", category="Adventure", tags=("comedy",)),
    Item("1", "Toy Story (1995)", category="Adventure", tags=("children", "comedy")),
    Item("48", "Pocahontas (1995)", category="Children", tags=("animation", "musical")),
    Item("16", "Casino (1995)", category="Crime", tags=("drama", "mafia")),
    Item("5796", "Casino Royale (1967)", category="Action", tags=("comedy", "casino")),
    Item("4963", "Ocean's Eleven (2001)", category="Crime", tags=("thriller", "casino")),
]


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        ("something like The Godfather", {"anchors": ("858",)}),
        ("The Godfather Part III", {"anchors": ("2023",)}),
        ("something like The Dark Knight", {"anchors": ("58559",)}),
        ("more like Star Wars: Episode VI - Return of the Jedi", {"anchors": ("1210",)}),
        ("i loved American History X, anything similar?", {"anchors": ("2329",)}),
        ("something like Casino", {"anchors": ("16",), "tags": ()}),  # a name, though "casino" is a tag
        ("a film about a casino", {"anchors": (), "tags": ("casino",)}),
        ("nothing with children or comedy", {"exclude_categories": ("Children", "Comedy")}),
        ("no musical or animation", {"exclude_tags": ("musical", "animation")}),
        ("no comedy or children", {"exclude_categories": ("Comedy", "Children")}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_movielens_spellings(ask: str, expected: dict[str, Any]) -> None:
    got = interpret(ask, AskIndex(ML))
    assert {f: getattr(got, f) for f in expected} == expected
