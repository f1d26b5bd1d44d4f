from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recbot.catalog import read_catalog, read_interactions
from recbot.catalog.records import parse_timestamp
from recbot.errors import CatalogError
from tests.conftest import write_jsonl


def _reasons(result) -> dict[int | None, str]:
    return {e.line: str(e) for e in result.rejected}


def test_jsonl_rejects_each_bad_row_and_keeps_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    lines = [
        json.dumps({"id": "a", "title": "Alpha", "tags": "x|y", "year": 1999}),  # 1 ok
        json.dumps({"title": "No id"}),  # 2 missing id
        json.dumps({"id": "b", "title": "   "}),  # 3 empty title
        '{"id": "c", "title": "Broken"',  # 4 bad JSON
        json.dumps({"id": "d", "title": "Delta", "extra": {"nested": 1}}),  # 5 non-scalar field
        json.dumps({"id": "a", "title": "Alpha again"}),  # 6 duplicate: last wins
        json.dumps(["not", "an", "object"]),  # 7 not an object
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "e", "title": "Caf\xe9"}\n')  # 8 invalid UTF-8
    result = read_catalog(path)
    assert [i.id for i in result.items] == ["a"]
    assert result.items[0].title == "Alpha again"
    reasons = _reasons(result)
    assert set(reasons) == {2, 3, 4, 5, 7, 8}
    assert reasons[2] == "catalog.jsonl line 2: field 'id' is missing"
    assert reasons[3] == "catalog.jsonl line 3: field 'title' is empty"
    assert "not valid JSON" in reasons[4]
    assert "field 'extra' must be a scalar" in reasons[5]
    assert "must be a JSON object" in reasons[7]
    assert "not valid UTF-8" in reasons[8]
    assert [(n.line, n.field) for n in result.notes] == [(6, "id")]
    assert "last one wins" in str(result.notes[0])


def test_item_fields_and_text(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": 7, "title": "T", "category": "c", "tags": ["a", "b", "a"], "year": 2001, "price": 9.5}],
    )
    item = read_catalog(path).items[0]
    assert item.id == "7" and item.tags == ("a", "b")
    assert dict(item.metadata) == {"year": 2001, "price": 9.5}
    assert item.text == "T Category: c. Tags: a, b."


def test_csv_rows_with_bad_cells_are_rejected_by_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(
        b"id,title,category,tags\n"
        b"1,One,books,a|b\n"
        b"2,,books,\n"
        b'3,"Multi\nline",films,\n'
        b"4,Bad \xff byte,films,\n"
        b"5,Too,many,cells,here\n"
        b"6,Six,games,\n"
    )
    result = read_catalog(path)
    assert [i.id for i in result.items] == ["1", "3", "6"]
    assert result.items[1].title == "Multi\nline"
    reasons = _reasons(result)
    assert set(reasons) == {3, 6, 7}
    assert reasons[3] == "catalog.csv line 3: field 'title' is empty"
    assert reasons[6] == "catalog.csv line 6: field 'title' is not valid UTF-8"
    assert "has 5 cells, the header has 4" in reasons[7]


def test_interactions_validation(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "i.jsonl",
        [
            {"user_id": "u", "item_id": "a", "rating": "4.5", "timestamp": "2024-01-02T03:04:05Z"},
            {"user_id": "u", "item_id": "b", "rating": "great"},
            {"user_id": "u", "item_id": "c", "timestamp": "yesterday"},
            {"item_id": "d"},
            {"user_id": "u", "item_id": "e", "rating": "NaN"},
        ],
    )
    result = read_interactions(path)
    assert [(i.item_id, i.rating, i.timestamp) for i in result.interactions] == [("a", 4.5, 1704164645)]
    reasons = _reasons(result)
    assert reasons[2] == "i.jsonl line 2: field 'rating' must be a number, got 'great'"
    assert "field 'timestamp' must be seconds since the epoch or ISO 8601" in reasons[3]
    assert reasons[4] == "i.jsonl line 4: field 'user_id' is missing"
    assert "field 'rating' must be a finite number" in reasons[5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (12, 12), ("12", 12), (12.9, 12), ("1970-01-01T00:01:00Z", 60), ("1970-01-01", 0)],
)
def test_parse_timestamp(value: object, expected: int | None) -> None:
    assert parse_timestamp(value) == expected


def test_amazon_reader_builds_item_text_from_reviews(tmp_path: Path) -> None:
    path = tmp_path / "reviews.json.gz"
    rows = [
        {
            "reviewerID": "r1",
            "asin": "A1",
            "overall": 5.0,
            "summary": "Great capo",
            "reviewText": "Holds well. Easy.",
            "unixReviewTime": 100,
        },
        {
            "reviewerID": "r2",
            "asin": "A1",
            "overall": 4.0,
            "summary": "Great capo",
            "reviewText": "Fine.",
            "unixReviewTime": 200,
        },
        {"reviewerID": "r3", "asin": "A2", "overall": "five", "summary": "x", "reviewText": "y", "unixReviewTime": 300},
    ]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    result = read_catalog(path)
    assert [i.id for i in result.items] == ["A1"]
    assert result.items[0].description.startswith("Great capo.")
    assert [(i.user_id, i.rating, i.review) for i in result.interactions] == [
        ("r1", 5.0, "Great capo. Holds well. Easy."),
        ("r2", 4.0, "Great capo. Fine."),
    ]
    assert str(result.rejected[0]) == "reviews.json.gz line 3: field 'overall' must be a number, got 'five'"


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CatalogError, match="unknown extension"):
        read_catalog(tmp_path / "x.txt")
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope.jsonl")


def test_amazon_holdout_last_builds_item_text_from_the_training_split(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    rows = [
        {"reviewerID": "r1", "asin": "A", "overall": 5, "summary": "Old words", "reviewText": "x", "unixReviewTime": 1},
        {
            "reviewerID": "r1",
            "asin": "B",
            "overall": 5,
            "summary": "Secret words",
            "reviewText": "y",
            "unixReviewTime": 2,
        },
        {
            "reviewerID": "r2",
            "asin": "B",
            "overall": 4,
            "summary": "Fine words",
            "reviewText": "z",
            "unixReviewTime": 1,
        },
        {"reviewerID": "r2", "asin": "A", "overall": 4, "summary": "Tie A", "reviewText": "w", "unixReviewTime": 3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = {i.id: i for i in read_catalog(path, holdout_last=True).items}
    assert "Secret" not in items["B"].description and "Fine words" in items["B"].description
    assert "Tie A" not in items["A"].description and "Old words" in items["A"].description
