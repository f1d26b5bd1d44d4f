import numpy as np
import pytest

from recbot.retrieval.hybrid import bert_scores
from recbot.retrieval.profile import (
    blend_query,
    build_profile,
    interest_profile,
    rating_weight,
    rating_weights,
    recency_weights,
    with_reviews,
)
from recbot.retrieval.ranking import mmr, top_reasons, unit_range
from recbot.types import Interaction

E = np.eye(3, dtype=np.float32)


@pytest.mark.parametrize(
    ("rating", "weight"), [(None, 1.0), (5, 1.0), (4, 0.5), (3, 0.0), (2, -0.5), (1, -1.0), (0.5, -1.0)]
)
def test_rating_weight(rating, weight) -> None:
    assert rating_weight(rating) == weight
    assert rating_weights([rating, 3]).tolist() == [weight, 0.0]


def test_recency_halves_every_half_life() -> None:
    day = 86_400
    np.testing.assert_allclose(recency_weights([0, 10 * day, 20 * day], half_life_days=10), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(recency_weights([None, None], half_life_days=10), [0.5**0.1, 1.0])
    assert recency_weights([], 10).shape == (0,)


def test_profile_is_weighted_mean_pushed_away_from_dislikes() -> None:
    p = build_profile(E, np.array([1.0, 1.0, -1.0]), dislike_weight=0.5)
    np.testing.assert_allclose(p, np.array([1, 1, -0.5]) / 1.5, rtol=1e-6)
    assert build_profile(E, np.array([0.0, -1.0, -1.0])) is None  # nothing liked: cold start
    assert build_profile(np.zeros((0, 3)), np.zeros(0)) is None


def test_blend_query() -> None:
    np.testing.assert_allclose(blend_query(E[0], E[1], 0.5), np.array([1, 1, 0]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(blend_query(None, E[1], 0.5), E[1])
    np.testing.assert_allclose(blend_query(E[0], None, 0.5), E[0])
    assert blend_query(None, None, 0.5) is None


def test_with_reviews_moves_only_reviewed_items() -> None:
    out = with_reviews(E[:2], [E[2], None], review_weight=1.0)
    np.testing.assert_allclose(out[0], np.array([1, 0, 1]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(out[1], E[1])


DAY = 86_400
ITEM_VECTORS = {"liked": E[0], "disliked": E[1], "other": E[2]}
# liked with a review (written towards "other"), disliked 10 days earlier, one item without a vector
HISTORY = [
    Interaction("u", "disliked", 1.0, "awful", 0),
    Interaction("u", "gone", 5.0, None, 5 * DAY),
    Interaction("u", "liked", 5.0, "lovely", 10 * DAY),
]
REVIEWS = {"liked": E[2], "disliked": E[0]}


def test_interest_profile_is_the_served_one_with_a_review_and_a_dislike() -> None:
    p = interest_profile(HISTORY, ITEM_VECTORS, REVIEWS, review_weight=0.5, half_life_days=10.0, dislike_weight=0.5)
    assert [h.item_id for h in p.history] == ["disliked", "liked"]  # no vector, not in the profile
    # the review moves "liked" to unit(e0 + 0.5 e2); "disliked" moves to unit(e1 + 0.5 e0)
    liked, disliked = np.array([1, 0, 0.5]) / np.sqrt(1.25), np.array([0.5, 1, 0]) / np.sqrt(1.25)
    np.testing.assert_allclose(p.vectors, [disliked, liked], rtol=1e-6)
    # rating 1 -> -1, ten days = one half life back -> x 0.5; then x dislike_weight 0.5
    np.testing.assert_allclose(p.weights, [-0.5, 1.0])
    expected = liked - 0.25 * disliked
    np.testing.assert_allclose(p.vector, expected / np.linalg.norm(expected), rtol=1e-6)
    # the same, spelt the way recommend used to: with_reviews, rating x recency, build_profile
    vectors = with_reviews(np.stack([E[1], E[0]]), [E[0], E[2]], 0.5)
    weights = rating_weights([1.0, 5.0]) * recency_weights([0, 10 * DAY], 10.0)
    np.testing.assert_allclose(p.vector, build_profile(vectors, weights, dislike_weight=0.5), rtol=1e-6)


def test_interest_profile_uses_a_review_vector_only_where_there_is_review_text() -> None:
    plain = [Interaction(h.user_id, h.item_id, h.rating, None, h.timestamp) for h in HISTORY]
    p = interest_profile(plain, ITEM_VECTORS, REVIEWS)
    np.testing.assert_allclose(p.vectors, [E[1], E[0]])
    assert interest_profile(plain, ITEM_VECTORS).vector == pytest.approx(p.vector)


def test_interest_profile_cold_start() -> None:
    assert interest_profile([], ITEM_VECTORS).vector is None
    only_dislikes = interest_profile(HISTORY[:1], ITEM_VECTORS)
    assert only_dislikes.vector is None and only_dislikes.weights.tolist() == [-1.0]


def test_bert_scores_rank_with_the_served_profile() -> None:
    index = {"liked": 0, "disliked": 1, "other": 2}
    kwargs = {"review_weight": 0.5, "half_life_days": 10.0, "dislike_weight": 0.5}
    scores = bert_scores([HISTORY, []], E, index, review_vectors=[REVIEWS, None], **kwargs)
    np.testing.assert_allclose(scores[0], E @ interest_profile(HISTORY, ITEM_VECTORS, REVIEWS, **kwargs).vector)
    assert scores[1].tolist() == [0.0, 0.0, 0.0]  # no history: no content signal
    # Settings' values are the defaults: no reviews given, no reviews used
    np.testing.assert_allclose(
        bert_scores([HISTORY], E, index)[0], E @ interest_profile(HISTORY, ITEM_VECTORS).vector, rtol=1e-6
    )


def test_mmr_known_answer() -> None:
    # a and a' are near-duplicates; b is different but slightly less relevant.
    vecs = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float64)
    rel = np.array([0.9, 0.89, 0.8])
    assert mmr(vecs, rel, 3, lambda_=1.0) == [0, 1, 2]  # pure relevance
    assert mmr(vecs, rel, 2, lambda_=0.5) == [0, 2]  # the duplicate loses to the different item
    assert mmr(vecs, rel, 10, lambda_=0.5) == [0, 2, 1]  # k larger than the list
    assert mmr(np.zeros((0, 2)), np.zeros(0), 3, 0.5) == []


def test_top_reasons_ranks_by_weighted_similarity() -> None:
    history = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float64)
    reasons = top_reasons(np.array([1.0, 0.0]), history, np.array([0.2, 1.0, 1.0]), n=2)
    assert [i for i, _ in reasons] == [1, 0]  # 1.0*0.8 beats 0.2*1.0
    assert reasons[0][1] == pytest.approx(0.8)
    # disliked (weight 0) and orthogonal items are never reasons
    assert top_reasons(np.array([0.0, 1.0]), history[:1], np.array([1.0]), n=2) == []


def test_unit_range() -> None:
    np.testing.assert_allclose(unit_range(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert unit_range(np.array([7.0, 7.0])).tolist() == [1.0, 1.0]
    assert unit_range(np.array([])).tolist() == []
