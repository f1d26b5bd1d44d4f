"""The hybrid ranking: known answers for its components, weight choice on validation
items, and its use (and storage) in Recommender.recommend."""

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from recbot.retrieval.hybrid import (
    COMPONENTS,
    DEFAULT_WEIGHTS,
    WEIGHT_GRID,
    CollabModel,
    HybridWeights,
    blend,
    choose_weights,
    score_user,
    tune,
    zscore,
)
from recbot.types import Interaction
from tests.conftest import write_jsonl


def hist(user: str, *items: str) -> list[Interaction]:
    return [Interaction(user, item, 5.0, None, t) for t, item in enumerate(items)]


def test_knn_is_the_sum_of_item_cosines_to_the_users_items() -> None:
    # a: u1 u2 | b: u1 u2 u3 | c: u3
    model = CollabModel.fit([hist("u1", "a", "b"), hist("u2", "a", "b"), hist("u3", "b", "c")], ["a", "b", "c"])
    assert model.popularity.tolist() == [2, 3, 1]
    # cos(a,a)=1, cos(a,b)=2/sqrt(2*3), cos(a,c)=0 ; a user holding only "a":
    knn = model.scores([hist("x", "a")])["knn"][0]
    np.testing.assert_allclose(knn, [1.0, 2 / np.sqrt(6), 0.0], rtol=1e-6)
    # holding a and c: cos(b,a) + cos(b,c) = 2/sqrt(6) + 1/sqrt(3)
    knn = model.scores([hist("x", "a", "c")])["knn"][0]
    np.testing.assert_allclose(knn[1], 2 / np.sqrt(6) + 1 / np.sqrt(3), rtol=1e-6)


def test_together_counts_users_with_both_items() -> None:
    model = CollabModel.fit([hist("u1", "a", "b"), hist("u2", "a", "b"), hist("u3", "b", "c")], ["a", "b", "c"])
    counts, cosines = model.together(["a", "c", "unknown"], "b")
    assert counts.tolist() == [2.0, 1.0, 0.0]
    np.testing.assert_allclose(cosines, [2 / np.sqrt(6), 1 / np.sqrt(3), 0.0], rtol=1e-6)
    assert model.together(["a"], "unknown")[0].tolist() == [0.0]


def test_neighbour_lists_keep_each_items_nearest_and_give_the_knn_they_cover() -> None:
    rng = np.random.default_rng(0)
    items = [f"i{j}" for j in range(120)]
    p = np.arange(1, 121) ** -0.9
    p /= p.sum()
    hists = [hist(f"u{u}", *(items[j] for j in rng.choice(120, size=12, replace=False, p=p))) for u in range(80)]
    model = CollabModel.fit(hists, items)
    exact = model.scores(hists[:10], ease=False)
    full = model.scores(hists[:10], ease=False, neighbours=len(items))  # every neighbour: the exact kNN
    for name in ("knn", "knn_recent", "knn_decay"):
        np.testing.assert_allclose(full[name], exact[name], atol=1e-5)
    cols = np.array([3, 0, 77, 119, 3])
    for u in range(10):  # knn_at: the exact values at some items only
        at = model.knn_at(hists[u], cols)
        for name in ("knn", "knn_recent", "knn_decay"):
            np.testing.assert_allclose(at[name], exact[name][u, cols], atol=1e-5)
    lists = model.neighbour_lists(5).to_csr()
    assert np.diff(lists.indptr).max() <= 5
    cosine = model._knn(sparse.identity(len(items), format="csr", dtype=np.float32))  # item x item cosines
    for j in (0, 7, 60):  # each row holds its item's 5 largest cosines (ties aside)
        kept = lists[j].toarray().ravel()
        assert np.isclose(np.sort(kept[kept > 0])[::-1], np.sort(cosine[j])[::-1][: (kept > 0).sum()]).all()
    # counts and cosines for reasons from the lists: exact where a pair is in either list, else 0
    history = [h.item_id for h in hists[0]]
    pairs = 0
    for (c_ex, cos_ex), (c_nb, cos_nb) in zip(
        model.together_many(history, items[:30]), model.together_many(history, items[:30], neighbours=5), strict=True
    ):
        listed = cos_nb > 0
        np.testing.assert_allclose(cos_nb[listed], cos_ex[listed], rtol=1e-5)
        assert (c_nb[listed] == c_ex[listed]).all() and (c_nb[~listed] == 0).all()
        pairs += int(listed.sum())
    assert pairs >= 30  # the lists hold the strong pairs, so this compared something


def random_histories(rng: np.random.Generator, users: int, items: list[str]) -> dict[str, list[Interaction]]:
    """Skewed, small histories: many items share a popularity, so cosines tie often."""
    p = np.arange(1, len(items) + 1) ** -0.8
    p /= p.sum()
    out = {}
    for u in range(users):
        chosen = rng.choice(len(items), size=int(rng.integers(1, 9)), replace=False, p=p)
        out[f"u{u:03d}"] = hist(f"u{u:03d}", *(items[j] for j in chosen))
    return out


def assert_same_csr(a: sparse.spmatrix, b: sparse.spmatrix) -> None:
    a, b = sparse.csr_matrix(a, copy=True), sparse.csr_matrix(b, copy=True)
    a.sort_indices()
    b.sort_indices()
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)  # bit for bit


def test_a_neighbour_list_holds_the_items_above_its_m_plus_first_value() -> None:
    rng = np.random.default_rng(3)
    items = [f"i{j:03d}" for j in range(80)]
    model = CollabModel.fit(random_histories(rng, 60, items), items)
    m = 4
    lists = model.neighbour_lists(m)
    left, right = model._knn_factors()
    full, listed = (left @ right).toarray(), lists.to_csr().toarray()
    ties = 0
    for j in range(len(items)):
        values = np.sort(full[j][full[j] > 0])[::-1]
        floor = values[m] if len(values) > m else 0.0
        assert lists.floor[j] == floor
        assert set(np.flatnonzero(listed[j])) == set(np.flatnonzero(full[j] > floor)), j
        np.testing.assert_array_equal(listed[j][listed[j] > 0], full[j][listed[j] > 0])
        ties += int(len(values) > m and values[m - 1] == values[m])
    assert ties >= 5  # rows whose m-th value ties with the next were exercised


def test_an_updated_model_equals_a_fresh_fit_bit_for_bit() -> None:
    """Users gain and lose items, come and go; after each change the updated model's
    matrix, popularity, transitions and neighbour lists are a fresh fit's, bit for bit,
    and so are its scores. Ties are common here (small, skewed histories)."""
    rng = np.random.default_rng(7)
    items = [f"i{j:03d}" for j in range(400)]  # 25 patched rows before a merge: both are exercised
    histories = dict(sorted(random_histories(rng, 120, items).items()))
    model = CollabModel.fit(histories, items)
    model.neighbour_lists(4)
    p = np.arange(1, len(items) + 1) ** -0.8
    p /= p.sum()
    patched_seen = merged_seen = False
    for step in range(40):
        changed: dict[str, list[Interaction]] = {}
        for k in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 5))
            user = sorted(histories)[int(rng.integers(len(histories)))] if kind < 4 else f"new{step}-{k}"
            h = list(histories.get(user, []))
            if kind == 0 and h:
                h.pop(int(rng.integers(len(h))))  # loses an item
            elif kind == 1:
                h = []  # forgotten
            elif kind == 2:
                h = h[::-1]  # the same items in another order: only the transitions change
            else:  # gains an item (a new user: their first)
                item = items[int(rng.choice(len(items), p=p))]
                if item not in {x.item_id for x in h}:
                    h.append(Interaction(user, item, 5.0, None, 100 + step))
            changed[user] = h
            if h:
                histories[user] = h
            else:
                histories.pop(user, None)
        histories = dict(sorted(histories.items()))
        before = len(model.neighbour_lists(4).patched)
        model = model.update(changed)
        after = len(model.neighbour_lists(4).patched)
        patched_seen |= after > before
        merged_seen |= after < before
        fresh = CollabModel.fit(histories, items)
        assert model.user_ids is not None and model.user_ids.tolist() == list(histories)
        assert_same_csr(model.matrix, fresh.matrix)
        np.testing.assert_array_equal(model.popularity, fresh.popularity)
        assert_same_csr(model.transition, fresh.transition)
        assert_same_csr(model.neighbour_lists(4).to_csr(), fresh.neighbour_lists(4).to_csr())
        np.testing.assert_array_equal(model.neighbour_lists(4).floor, fresh.neighbour_lists(4).floor)
        probe = [histories[u] for u in list(histories)[:5]]
        for name, values in model.scores(probe, ease=False, neighbours=4).items():
            np.testing.assert_array_equal(values, fresh.scores(probe, ease=False, neighbours=4)[name])
    assert patched_seen and merged_seen


def test_users_with_both_counts_the_users_who_hold_each_pair() -> None:
    rng = np.random.default_rng(4)
    items = [f"i{j:02d}" for j in range(30)]
    histories = random_histories(rng, 200, items)
    model = CollabModel.fit(histories, items)
    pairs = [(a, b) for a in items[:8] for b in items[:8]] + [("i00", "unknown"), ("unknown", "i01")]
    holds = {u: {h.item_id for h in hist} for u, hist in histories.items()}
    expected = [sum(a in held and b in held for held in holds.values()) for a, b in pairs]
    assert model.users_with_both(pairs) == expected and max(expected) > 1


def test_a_saved_model_loads_bit_for_bit_and_updates_as_the_one_saved(tmp_path: Path) -> None:
    """Ingest saves the pool path's model (patched lists and all) for serving processes to
    load: what loads is the model saved, and it updates as that one does."""
    rng = np.random.default_rng(11)
    items = [f"i{j:03d}" for j in range(600)] + ["Ünïcödé ✓", "x" * 300]  # ids of any length and script
    histories = random_histories(rng, 300, items)
    model = CollabModel.fit(histories, items)
    model.neighbour_lists(4)
    model = model.update({"u001": hist("u001", "i300", "i407"), "u777": hist("u777", "i503")})
    assert len(model.neighbour_lists(4).patched)  # a patched model, saved as it is
    model.save(tmp_path / "m.npz", seq=7)
    loaded, meta = CollabModel.load(tmp_path / "m.npz")
    assert meta == {"seq": 7} and loaded.items == model.items and loaded.index == model.index
    change = {"u002": hist("u002", "i009")}
    for a, b in [(loaded, model), (loaded.update(change), model.update(change))]:
        assert_same_csr(a.matrix, b.matrix)
        assert_same_csr(a.transition, b.transition)
        assert_same_csr(a.sequences, b.sequences)
        assert_same_csr(a.neighbour_lists(4).to_csr(), b.neighbour_lists(4).to_csr())
        for name in ("popularity", "user_ids", "transition_sums"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.neighbour_lists(4).floor, b.neighbour_lists(4).floor)
    with pytest.raises(ValueError, match="fitted on a mapping"):
        CollabModel.fit(list(histories.values()), items).save(tmp_path / "x.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises((OSError, ValueError)):
        CollabModel.load(tmp_path / "bad.npz")


def test_the_update_rules_cosine_bounds_hold_the_lists_float32_sums() -> None:
    """A list holds float32 sums of many equal terms, which drift from the exact cosine
    as the count of users with both grows (here to thousands); the bounds the update
    compares with the floors must stay above every sum, or a row could be missed."""
    rng = np.random.default_rng(5)
    items = [f"i{j:02d}" for j in range(30)]
    p = np.arange(1, 31) ** -0.5
    p /= p.sum()
    histories = {
        f"u{u:05d}": hist(f"u{u:05d}", *(items[j] for j in rng.choice(30, size=12, replace=False, p=p)))
        for u in range(6000)
    }
    model = CollabModel.fit(histories, items)
    lists = model.neighbour_lists(len(items)).to_csr().toarray()  # every pair: the sums as the lists hold them
    every = np.arange(len(items))
    bounds = model._cosine_bounds(every, model._with_both(every)).toarray()
    both = (model._matrix_t @ model.matrix).toarray()
    exact = both / np.sqrt(np.outer(model.popularity, model.popularity).astype(np.float64))
    assert both.max() > 2000
    listed = lists > 0
    assert (lists[listed] <= bounds[listed]).all()
    assert (lists[listed] / exact[listed] - 1).max() > 1e-5  # sums drift up past a fixed 1e-5 slack


def test_only_a_model_fitted_on_user_ids_updates() -> None:
    model = CollabModel.fit([hist("u1", "a", "b")], ["a", "b"])
    with pytest.raises(ValueError, match="without user ids"):
        model.update({"u1": hist("u1", "a")})


def test_transition_counts_what_came_next_in_others_sequences() -> None:
    model = CollabModel.fit([hist("u1", "a", "b"), hist("u2", "a", "c"), hist("u3", "a", "c")], ["a", "b", "c"])
    # after a: b once, c twice (row-normalised); a user whose last item is a
    t = model.scores([hist("x", "a")])["transition"][0]
    np.testing.assert_allclose(t, [0.0, 1 / 3, 2 / 3], rtol=1e-6)
    assert model.scores([[]])["transition"][0].tolist() == [0.0, 0.0, 0.0]  # no history, no signal


def test_zscore_and_blend() -> None:
    z = zscore(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert z[1].tolist() == [0.0, 0.0, 0.0]  # a constant row carries no signal
    parts = {"knn": np.array([[0.0, 1.0]]), "bert": np.array([[1.0, 0.0]])}
    np.testing.assert_allclose(blend(parts, {"knn": 1.0, "bert": 0.5}), [[-0.5, 0.5]])
    assert blend(parts, {}).tolist() == [[0.0, 0.0]]


def test_choose_weights_finds_the_component_that_ranks_the_targets() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    targets = rng.integers(0, n_items, n_users)
    good = rng.random((n_users, n_items))
    good[np.arange(n_users), targets] = 2.0  # the target always on top
    parts = {"knn": rng.random((n_users, n_items)), "bert": good}
    seen = sparse.csr_matrix((n_users, n_items))
    weights, ndcg = choose_weights(parts, seen, targets, grid={"knn": (0.0, 1.0), "bert": (0.0, 0.25)})
    assert weights == {"bert": 0.25} and ndcg == 1.0
    # a seen target cannot be recommended: excluding it leaves no hit
    seen = sparse.csr_matrix((np.ones(n_users), (np.arange(n_users), targets)), shape=(n_users, n_items))
    assert choose_weights(parts, seen, targets, grid={"bert": (1.0,)})[1] == 0.0


@pytest.mark.parametrize("search", ["coordinate", "grid"])
def test_both_searches_find_a_mix_and_coordinate_ascent_scores_few_points(search: str, monkeypatch) -> None:
    """Two components that each rank half the users' targets: only a mix ranks all.
    Coordinate ascent finds it too, scoring at most TUNE_PASSES x (grid values) points."""
    from recbot.retrieval import hybrid

    rng = np.random.default_rng(1)
    n_users, n_items = 60, 50
    targets = rng.integers(0, n_items, n_users)
    a, b = rng.random((n_users, n_items)), rng.random((n_users, n_items))
    a[np.arange(0, n_users, 2), targets[::2]] = 3.0
    b[np.arange(1, n_users, 2), targets[1::2]] = 3.0
    parts = {"knn": a, "ease": b, "popularity": rng.random((n_users, n_items))}
    grid = {"knn": (0.0, 0.5, 1.0), "ease": (0.0, 0.5, 1.0), "popularity": (0.0, 0.1, 1.0)}
    scored = []
    real_blend = hybrid.blend
    monkeypatch.setattr(hybrid, "blend", lambda *a, **k: scored.append(1) or real_blend(*a, **k))
    seen = sparse.csr_matrix((n_users, n_items))
    weights, ndcg = choose_weights(parts, seen, targets, grid=grid, search=search)
    assert weights.get("knn") and weights.get("ease") and ndcg > 0.9
    assert len(scored) <= (hybrid.TUNE_PASSES * 9 if search == "coordinate" else 26)
    assert len(scored) < 26 or search == "grid"


def _two_taste_histories(n_users: int) -> dict[str, list[Interaction]]:
    """Half the users take 3 of a, b, c, d in order, the other half 3 of w, x, y, z: a
    user's last item is predictable from the others' co-occurrence, not from the text."""
    out = {}
    for u in range(n_users):
        taste = ("a", "b", "c", "d") if u % 2 else ("w", "x", "y", "z")
        drop = (u // 2) % 4
        out[f"u{u:03d}"] = hist(f"u{u:03d}", *(t for j, t in enumerate(taste) if j != drop))
    return out


ITEMS = ["a", "b", "c", "d", "w", "x", "y", "z"] + [f"f{j}" for j in range(20)]  # f*: never bought


def test_tune_defaults_on_few_users_and_chooses_on_many() -> None:
    vectors = np.eye(len(ITEMS), dtype=np.float32)  # content says nothing: every item orthogonal
    few = tune(_two_taste_histories(10), ITEMS, vectors)
    assert few.source == "default" and few.weights == DEFAULT_WEIGHTS and few.users == 10
    chosen = tune(_two_taste_histories(64), ITEMS, vectors)
    assert chosen.source == "validation" and chosen.users == 64
    assert any(w > 0 for n, w in chosen.weights.items() if n != "bert")  # a collaborative signal was chosen
    # 26 unseen items: a random order would put the target at NDCG@10 of about 0.13
    assert chosen.validation_ndcg is not None and chosen.validation_ndcg > 0.5
    assert tune(_two_taste_histories(64), ITEMS, vectors) == chosen  # same data, same seed: same choice
    assert HybridWeights.from_json(chosen.to_json()) == chosen


class _MemoryVectors:
    """``hybrid.VectorSource`` over an in-memory matrix, recording which vectors were read."""

    def __init__(self, items: list[str], vectors: np.ndarray) -> None:
        self.items, self.matrix, self.row = items, vectors, {i: j for j, i in enumerate(items)}
        self.read: set[str] = set()

    def vectors(self, ids):
        self.read.update(ids)
        return {i: self.matrix[self.row[i]] for i in ids if i in self.row}

    def nearest(self, vector, n, exclude):
        order = np.argsort(-(self.matrix @ vector), kind="stable")
        return [self.items[j] for j in order if self.items[j] not in exclude][:n]


def _random_catalog(n_items: int, n_users: int, per_user: int, seed: int = 0):
    """Unit vectors in 16-d and users who each hold a run of neighbouring items (so the
    collaborative components and the text both carry signal), rated 1-5 in time order."""
    rng = np.random.default_rng(seed)
    items = [f"i{j:05d}" for j in range(n_items)]
    vectors = rng.normal(size=(n_items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    histories = {}
    for u in range(n_users):
        start = int(rng.integers(0, n_items - 3 * per_user))
        picks = rng.choice(np.arange(start, start + 3 * per_user), size=per_user, replace=False)
        histories[f"u{u:03d}"] = [
            Interaction(f"u{u:03d}", items[j], float(rng.integers(1, 6)), None, 1_000 + t) for t, j in enumerate(picks)
        ]
    return items, vectors, histories


def test_tuning_a_pool_that_holds_the_catalog_is_tuning_the_exact_hybrid() -> None:
    """With every item a candidate and the sample the whole catalog, the pool path's blend
    is the exact one (see the pool_scores test below), so tuning either chooses alike."""
    items, vectors, histories = _random_catalog(60, 120, 6)
    for search in ("coordinate", "grid"):
        exact = tune(histories, items, vectors, search=search)
        pool = tune(histories, items, _MemoryVectors(items, vectors), search=search, pool_size=len(items))
        assert exact.ranking == "exact" and pool.ranking == "pool"
        assert pool.weights == exact.weights and pool.validation_ndcg == pytest.approx(exact.validation_ndcg, abs=1e-6)


def test_tuning_the_pool_reads_only_the_vectors_it_ranks() -> None:
    """Past the exact threshold nobody holds every vector: tuning reads the fixed sample,
    the histories' items and each user's candidates, no more."""
    items, vectors, histories = _random_catalog(6000, 60, 6, seed=1)
    small, large = _MemoryVectors(items, vectors), _MemoryVectors(items, vectors)
    chosen = tune(histories, items, small, pool_size=5)
    assert chosen.ranking == "pool" and chosen.source == "validation" and chosen.users == 60
    # at most: 2048 sampled + 360 held + 60 users x (6 collaborative components + nearest) x 5
    assert len(small.read) <= 2048 + 360 + 60 * 7 * 5 < len(items)
    tune(histories, items, large, pool_size=50)
    assert len(small.read) < len(large.read) <= 2048 + 360 + 60 * 7 * 50


def test_tune_builds_the_served_profile_with_the_sampled_users_reviews() -> None:
    asked: list[str] = []

    def reviews(user: str) -> dict[str, np.ndarray]:
        asked.append(user)
        return {}

    vectors = np.eye(len(ITEMS), dtype=np.float32)
    chosen = tune(_two_taste_histories(64), ITEMS, vectors, max_users=50, review_vectors=reviews, half_life_days=30.0)
    assert chosen.users == 50 and len(asked) == 50 and asked == sorted(asked)  # only the sampled users' are read


def test_the_grid_covers_every_component_within_twice_the_old_size() -> None:
    assert set(WEIGHT_GRID) == set(COMPONENTS) and "ease" in WEIGHT_GRID
    assert int(np.prod([len(v) for v in WEIGHT_GRID.values()])) <= 2 * 324  # 2 cores: ~30 s on MovieLens


def test_an_ask_steers_the_hybrid() -> None:
    model = CollabModel.fit([hist("p", "a", "b", "c"), hist("q", "x", "y", "z")], ["a", "b", "c", "x", "y", "z"])
    history = hist("me", "a", "b")
    unseen = np.array([0, 0, 1, 1, 1, 1], dtype=bool)
    content = np.zeros(6, dtype=np.float32)
    plain = score_user(model, {"knn": 1.0, "transition": 1.0}, history, content)
    assert int(np.argmax(np.where(unseen, plain, -np.inf))) == 2  # c: what the a, b user had
    ask = np.array([0, 0, 0, 0, 0, 1.0], dtype=np.float32)  # "something like z"
    steered = score_user(model, {"knn": 1.0, "transition": 1.0}, history, content, ask, 0.6)
    assert int(np.argmax(np.where(unseen, steered, -np.inf))) == 5


def test_recommend_uses_co_occurrence_and_stores_weights_with_the_index(make_recommender, tmp_path: Path) -> None:
    # Text cannot link "violin rosin" to "cello strings"; 8 players bought both.
    items = [
        {"id": "v1", "title": "violin rosin", "category": "music"},
        {"id": "c1", "title": "cello strings", "category": "music"},
        {"id": "g1", "title": "garden hose", "category": "home"},
        {"id": "g2", "title": "garden rake", "category": "home"},
        {"id": "v2", "title": "violin bow", "category": "music"},
    ]
    inter = [{"user_id": f"p{u}", "item_id": i, "rating": 5} for u in range(8) for i in ("v1", "c1")]
    inter += [{"user_id": "me", "item_id": "v1", "rating": 5}]
    cat, ints = write_jsonl(tmp_path / "c.jsonl", items), write_jsonl(tmp_path / "i.jsonl", inter)
    rec = make_recommender()
    report = rec.ingest(cat, interactions=ints)
    assert report.hybrid.startswith("hybrid weights: defaults")  # 9 users: too few to tune
    recs = rec.recommend("me", k=2)
    # content-led defaults: the other violin item first, the co-bought strings next
    assert recs.strategy == "hybrid" and [r.item.id for r in recs] == ["v2", "c1"]
    content = make_recommender(hybrid=False).recommend("me", k=2)
    assert content.strategy == "profile" and content[0].item.id == "v2"
    # the weights travel with the data dir: another Recommender over it reads them
    rec.storage.set_meta("hybrid", HybridWeights({"knn_decay": 1.0, "bert": 0.25}, "validation", 99, 0.5).to_json())
    again = make_recommender()
    assert again.hybrid_weights().weights == {"knn_decay": 1.0, "bert": 0.25}
    top = again.recommend("me", k=1)[0]
    assert top.item.id == "c1"  # co-occurrence leads now
    assert [(b.item_id, b.also_liked_by) for b in top.because] == [("v1", 8)]  # the 8 players
    assert "8 others have both" in top.because[0].describe()
    # filters and exclusions still hold on the hybrid path
    home = again.recommend("me", k=5, category="home")
    assert home and {r.item.category for r in home} == {"home"}
    assert "v1" not in {r.item.id for r in rec.recommend("me", k=5)}


def test_a_lone_user_gets_the_content_ranking(make_recommender, tmp_path: Path) -> None:
    items = [{"id": f"i{j}", "title": f"thing {j}"} for j in range(4)]
    cat = write_jsonl(tmp_path / "c.jsonl", items)
    ints = write_jsonl(tmp_path / "i.jsonl", [{"user_id": "solo", "item_id": "i0", "rating": 5}])
    rec = make_recommender()
    rec.ingest(cat, interactions=ints)
    assert rec.recommend("solo", k=2).strategy == "profile"  # nobody else's interactions to learn from


@pytest.mark.parametrize("bad", ['{"weights": {}}', "not json"])
def test_hybrid_weights_from_bad_json_raise(bad: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        HybridWeights.from_json(bad)


def test_pool_scores_are_the_served_blend_when_the_pool_and_sample_are_the_catalog() -> None:
    """The pool path scores a subset with the catalog's statistics; with every item in the
    pool and in the sample it must give score_user's numbers exactly (up to float)."""
    from recbot.retrieval.hybrid import CollabModel, pool_scores, score_user

    histories = _two_taste_histories(40)
    model = CollabModel.fit(histories.values(), ITEMS)
    rng = np.random.default_rng(3)
    content, ask = rng.random(len(ITEMS)), rng.random(len(ITEMS))
    weights = {"knn": 0.5, "transition": 1.0, "bert": 0.25, "popularity": 0.1}
    history = histories["u001"]
    parts = {name: m[0] for name, m in model.scores([history], ease=False).items()}
    every = np.arange(len(ITEMS))
    np.testing.assert_allclose(
        pool_scores(parts, weights, every, content, every, content),
        score_user(model, weights, history, content),
        rtol=1e-5,
        atol=1e-5,
    )
    # score_user z-scores the ask over the catalog; pool_scores takes it z-scored already (by the sample)
    np.testing.assert_allclose(
        pool_scores(parts, weights, every, content, every, content, zscore(ask), zscore(ask), 0.6),
        score_user(model, weights, history, content, ask, 0.6),
        rtol=1e-5,
        atol=1e-5,
    )
    some = every[::3]  # a subset keeps the same numbers for its items
    np.testing.assert_allclose(
        pool_scores(parts, weights, some, content[some], every, content),
        score_user(model, weights, history, content)[some],
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_pool_path_gives_the_exact_hybrids_list_on_a_small_catalog(toy_recommender) -> None:
    """Forced on (``hybrid_pool``), the pool path takes the ANN index and the collaborative
    model over every item; on a catalog its pool covers, it lists what the exact path lists."""
    exact = {u: toy_recommender.recommend(u, q, k=4, blurbs=False) for u, q in [("spacefan", None), ("baker", "film")]}
    toy_recommender.settings = toy_recommender.settings.replace(hybrid_pool=True)
    for (user, query), before in zip([("spacefan", None), ("baker", "film")], exact.values(), strict=True):
        pooled = toy_recommender.recommend(user, query, k=4, blurbs=False)
        assert pooled.strategy == before.strategy.replace("hybrid", "hybrid-pool")
        assert [r.item.id for r in pooled] == [r.item.id for r in before]
        assert [b.item_id for r in pooled for b in r.because] == [b.item_id for r in before for b in r.because]
        # the counts shown are exact on both paths (the pool's lists hold only some pairs)
        assert [b.also_liked_by for r in pooled for b in r.because] == [
            b.also_liked_by for r in before for b in r.because
        ]


def _forty_things(tmp_path: Path, *, seed: int, per_user: int) -> tuple[Path, Path]:
    """A catalog of 40 items in three colours and 60 users with ``per_user`` random items
    each, as JSONL files to ingest."""
    rng = np.random.default_rng(seed)
    items = [{"id": f"i{j:02d}", "title": f"thing {j} {['red', 'blue', 'green'][j % 3]}"} for j in range(40)]
    inter = [
        {"user_id": f"u{u:02d}", "item_id": f"i{j:02d}", "rating": 5, "timestamp": t}
        for u in range(60)
        for t, j in enumerate(rng.choice(40, size=per_user, replace=False))
    ]
    return write_jsonl(tmp_path / "c.jsonl", items), write_jsonl(tmp_path / "i.jsonl", inter)


def test_pool_reasons_count_who_has_both_even_where_the_lists_lack_the_pair(make_recommender, tmp_path: Path) -> None:
    """With lists of two neighbours most pairs are in neither list; the counts shown are
    the users who hold both all the same."""
    rec = make_recommender(hybrid_pool=True, pool_neighbours=2)
    cat, ints = _forty_things(tmp_path, seed=3, per_user=6)
    rec.ingest(cat, interactions=ints)
    pool = rec._pool_model()
    assert pool is not None
    model, lists = pool.model, pool.model.neighbour_lists(2).to_csr()
    shown, outside = 0, 0
    for user in ("u00", "u01", "u02", "u03"):
        recs = rec.recommend(user, k=6, blurbs=False)
        assert recs.strategy == "hybrid-pool"
        for r in recs:
            for b in r.because:
                a, c = model.index[r.item.id], model.index[b.item_id]
                assert b.also_liked_by == model.users_with_both([(r.item.id, b.item_id)])[0]
                shown += 1
                outside += bool(b.also_liked_by and lists[a, c] == 0 and lists[c, a] == 0)
    assert shown and outside  # counts the lists could not give


def test_ingest_tunes_the_pool_past_the_exact_search_threshold(
    make_recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``exact_search_max_items`` the pool path serves, so tuning ranks each user's
    items among the pool's candidates, reading only their vectors (never the whole
    collection); it chooses what the pool forced on below the threshold chooses."""
    cat, ints = _forty_things(tmp_path, seed=2, per_user=5)
    exact = make_recommender(data_dir=tmp_path / "exact")
    exact.ingest(cat, interactions=ints)
    forced = make_recommender(data_dir=tmp_path / "forced", hybrid_pool=True)
    forced.ingest(cat, interactions=ints)
    past = make_recommender(data_dir=tmp_path / "past", exact_search_max_items=10)
    monkeypatch.setattr(past.store, "_read_all", lambda: pytest.fail("tuning read every vector"))
    past.ingest(cat, interactions=ints)
    assert past.store.exact_view() is None and forced.store.exact_view() is not None
    assert exact.hybrid_weights().ranking == "exact" and past.hybrid_weights().ranking == "pool"
    assert past.hybrid_weights().source == "validation"
    assert past.hybrid_weights() == forced.hybrid_weights()
    assert "ranked among the pool path's candidates" in past.hybrid_weights().describe()
