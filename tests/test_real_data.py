"""Readers on the real datasets in ../shared/data (skipped when absent)."""

from pathlib import Path

import pytest

from recbot.catalog import read_catalog

pytestmark = pytest.mark.data


def test_movielens_counts_match_the_data_readme(shared_data: Path) -> None:
    result = read_catalog(shared_data / "ml-latest-small")
    assert result.rejected == [] and result.notes == []
    assert len(result.items) == 9742
    assert len(result.interactions) == 100_836
    assert len({i.user_id for i in result.interactions}) == 610
    assert len({i.item_id for i in result.interactions}) == 9724
    toy_story = next(i for i in result.items if i.id == "1")
    assert toy_story.title == "Toy Story (1995)" and toy_story.metadata["year"] == 1995
    assert "Animation" in toy_story.tags and "pixar" in toy_story.tags  # genres and users' tags


def test_amazon_counts_match_the_data_readme(shared_data: Path) -> None:
    result = read_catalog(shared_data / "amazon-musical-instruments-5core" / "reviews_Musical_Instruments_5.json.gz")
    assert result.rejected == []
    assert len(result.interactions) == 10_261
    assert len({i.user_id for i in result.interactions}) == 1429
    assert len(result.items) == 900
    assert all(item.description for item in result.items)


def test_amazon_holdout_keeps_held_out_reviews_out_of_item_text(shared_data: Path) -> None:
    path = shared_data / "amazon-musical-instruments-5core" / "reviews_Musical_Instruments_5.json.gz"
    full = {i.id: i for i in read_catalog(path).items}
    train = read_catalog(path, holdout_last=True)
    assert len(train.interactions) == 10_261 and len(train.items) == 900  # every review is still stored
    assert sum(full[i.id].description != i.description for i in train.items) > 100
