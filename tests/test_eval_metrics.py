import math

import pytest

from recbot.eval.ranking import f1_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k

RANKED = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("fn", "relevant", "k", "expected"),
    [
        (hit_rate_at_k, {"c"}, 2, 0.0),
        (hit_rate_at_k, {"c"}, 3, 1.0),
        (precision_at_k, {"b", "d"}, 2, 0.5),
        (precision_at_k, {"b", "d"}, 10, 0.2),  # k beyond the list still divides by k
        (recall_at_k, {"b", "d", "z"}, 4, 2 / 3),
        (f1_at_k, {"b", "d"}, 2, 2 * 0.5 * 0.5 / 1.0),
        (f1_at_k, {"b", "z"}, 4, 1 / 3),  # P = 1/4, R = 1/2
        (recall_at_k, {"a", "b", "c", "d"}, 2, 0.5),
        (ndcg_at_k, {"c"}, 3, 1 / math.log2(4)),
        (ndcg_at_k, {"a", "c"}, 3, (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))),
        (ndcg_at_k, {"a"}, 10, 1.0),
        (mrr_at_k, {"c", "d"}, 4, 1 / 3),
        (mrr_at_k, {"d"}, 3, 0.0),
    ],
)
def test_known_answers(fn, relevant, k, expected) -> None:
    assert fn(RANKED, relevant, k) == pytest.approx(expected)


@pytest.mark.parametrize(("target", "k"), [("b", 1), ("b", 2), ("d", 3), ("d", 10), ("z", 5)])
def test_one_held_out_item_precision_is_hits_over_k_and_recall_is_hr(target: str, k: int) -> None:
    """Leave-last-out: one relevant item, so P@K = HR@K / K, R@K = HR@K, F1 from the two."""
    hr = hit_rate_at_k(RANKED, {target}, k)
    assert precision_at_k(RANKED, {target}, k) == pytest.approx(hr / k)
    assert recall_at_k(RANKED, {target}, k) == hr
    assert f1_at_k(RANKED, {target}, k) == pytest.approx(2 * hr / (k + 1))


@pytest.mark.parametrize("fn", [hit_rate_at_k, precision_at_k, recall_at_k, f1_at_k, ndcg_at_k, mrr_at_k])
def test_edge_cases_are_zero(fn) -> None:
    assert fn([], {"a"}, 5) == 0.0  # empty list
    assert fn(RANKED, set(), 5) == 0.0  # no relevant item
    assert fn(RANKED, {"z"}, 10) == 0.0  # relevant item never ranked


def test_text_metrics_known_answers() -> None:
    from recbot.eval.text import bleu, distinct_n, div, fcr, features_of, fmr, rouge, unique_sentence_ratio

    assert bleu(["the cat sat"], ["the cat sat"], 4) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["a b x y"], 1) == pytest.approx(50.0)
    assert rouge(["the cat"], ["the cat sat"])["rouge1"] == pytest.approx(100 * 2 * (1 * 2 / 3) / (1 + 2 / 3))
    assert unique_sentence_ratio(["Great.", "great.", "Fine."]) == pytest.approx(2 / 3)
    assert unique_sentence_ratio([]) == 0.0
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    feats = frozenset({"strings", "tone", "price"})
    assert features_of("Great tone, great price!", feats) == {"tone", "price"}
    assert fmr(["nice tone", "cheap"], ["tone is warm", "price ok"], feats) == 0.5
    assert fcr(["nice tone", "good price"], feats) == pytest.approx(2 / 3)
    assert div(["tone price", "tone", "strings"], feats) == pytest.approx((1 + 0 + 0) / 3)
    assert div(["only one"], feats) == 0.0
