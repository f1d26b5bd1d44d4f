"""EASE (Steck 2019): the hybrid's closed-form item-item component, against the closed form
computed independently with numpy, in both of the model's forms."""

import numpy as np
import pytest
from scipy import sparse

from recbot.retrieval import hybrid
from recbot.retrieval.hybrid import CollabModel, Ease, score_user
from recbot.types import Interaction


def closed_form(x: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P diagMat(1 / diag(P)), P = (XᵀX + λI)⁻¹, straight from the paper."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)[None, :]


def binary(users: int, items: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((users, items)) < 0.4).astype(np.float64)
    x[0, :] = 1.0  # every item held by someone
    return x


@pytest.mark.parametrize(("users", "items"), [(12, 5), (4, 9)], ids=["items-x-items", "woodbury"])
@pytest.mark.parametrize("lam", [0.5, 250.0])
def test_scores_equal_the_closed_form_with_a_zero_diagonal(users: int, items: int, lam: float) -> None:
    x = binary(users, items, seed=users)
    model = Ease.fit(sparse.csr_matrix(x), lam)
    assert (model.p is not None) == (items <= users)  # the smaller of the two exact forms
    # a user holding only item i scores row i of B
    b = model.scores(sparse.identity(items, format="csr"))
    np.testing.assert_allclose(b, closed_form(x, lam), atol=1e-5)
    np.testing.assert_allclose(np.diag(b), 0.0, atol=1e-6)
    rows = sparse.csr_matrix(x[:3])
    np.testing.assert_allclose(model.scores(rows), x[:3] @ closed_form(x, lam), atol=1e-5)


def hist(user: str, *items: str) -> list[Interaction]:
    return [Interaction(user, item, 5.0, None, t) for t, item in enumerate(items)]


HISTORIES = [hist("u1", "a", "b"), hist("u2", "a", "b"), hist("u3", "b", "c"), hist("u4", "c", "d")]
ITEMS = ["a", "b", "c", "d"]


def test_collab_model_adds_ease_over_its_training_matrix() -> None:
    model = CollabModel.fit(HISTORIES, ITEMS, ease_lambda=1.0)
    x = model.matrix.toarray()
    scores = model.scores([hist("me", "a")])
    np.testing.assert_allclose(scores["ease"][0], closed_form(x, 1.0)[0], atol=1e-5)
    assert int(np.argmax(scores["ease"][0][1:])) + 1 == 1  # after a: b, which both a-holders have
    assert "ease" not in model.scores([hist("me", "a")], ease=False)


def test_ease_is_absent_beyond_the_item_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hybrid, "EASE_MAX_ITEMS", 3)
    model = CollabModel.fit(HISTORIES, ITEMS)
    assert model.ease is None and "ease" not in model.scores([hist("me", "a")])
    # a blend that asks for it ranks with the other components
    score = score_user(model, {"ease": 1.0, "knn": 1.0}, hist("me", "a"), np.zeros(4, dtype=np.float32))
    assert score.shape == (4,) and np.isfinite(score).all()


def test_serving_fits_ease_only_when_the_weights_use_it() -> None:
    model = CollabModel.fit(HISTORIES, ITEMS)
    content = np.zeros(4, dtype=np.float32)
    score_user(model, {"knn": 1.0}, hist("me", "a"), content)
    assert model._ease is None  # not paid for by a blend without it
    with_ease = score_user(model, {"ease": 1.0}, hist("me", "a"), content)
    assert model._ease is not None
    np.testing.assert_allclose(with_ease, hybrid.zscore(model.scores([hist("me", "a")])["ease"])[0], atol=1e-6)
