from pathlib import Path

import pytest

from recbot.errors import ConfigError, FilterError, IndexNotBuiltError, UnknownItemError
from recbot.index import COLLAB_FILE
from tests.conftest import TOY_ITEMS, write_jsonl

TOPICS = ["apple", "brick", "cloud", "delta", "ember"]


def test_oracle_withheld_item_of_the_users_topic_comes_first(make_recommender, tmp_path: Path) -> None:
    # Each user liked 3 of the 4 items of "their" topic; the 4th must be recommended first.
    items = [{"id": f"{t}{j}", "title": f"{t} {t} {t} n{j}"} for t in TOPICS for j in range(4)]
    inter = [{"user_id": t, "item_id": f"{t}{j}", "rating": 5} for t in TOPICS for j in range(3)]
    rec = make_recommender()
    rec.ingest(write_jsonl(tmp_path / "c.jsonl", items), interactions=write_jsonl(tmp_path / "i.jsonl", inter))
    for topic in TOPICS:
        recs = rec.recommend(topic, k=3)
        assert recs[0].item.id == f"{topic}3"
        assert recs.strategy == "hybrid"  # other users have interactions: the hybrid ranks
        assert {r.item.id for r in recs}.isdisjoint({f"{topic}{j}" for j in range(3)})
        assert recs[0].because and all(b.item_id.startswith(topic) for b in recs[0].because)


def test_history_excluded_reasons_given_and_users_differ(toy_recommender) -> None:
    space = toy_recommender.recommend("spacefan", k=3)
    baker = toy_recommender.recommend("baker", k=3)
    assert len(space) == 3 and [r.rank for r in space] == [1, 2, 3]
    assert {r.item.id for r in space}.isdisjoint({"s1", "s2"})
    assert {r.item.id for r in baker}.isdisjoint({"c1", "c2", "s3"})
    assert space[0].item.id in {"s3", "s4"} and baker[0].item.id in {"c3", "c4"}
    assert all(b.item_id in {"s1", "s2"} for r in space for b in r.because)
    # the baker's disliked space film is never a reason
    assert all(b.item_id != "s3" for r in baker for b in r.because)


def test_category_and_metadata_filters(toy_recommender) -> None:
    recs = toy_recommender.recommend("spacefan", k=5, category="kitchen")
    assert recs and all(r.item.category == "kitchen" for r in recs)
    recs = toy_recommender.recommend("spacefan", k=5, filters={"tags": "hiking"})
    assert [r.item.id for r in recs] == ["h1"]
    with pytest.raises(FilterError, match=r"unknown filter field\(s\) \['colour'\]; the catalog's fields are \["):
        toy_recommender.recommend("spacefan", k=5, filters={"colour": "red"})


def test_scores_and_reasons_say_what_they_are(toy_recommender) -> None:
    hybrid = toy_recommender.recommend("spacefan", k=3)
    assert hybrid.strategy == "hybrid" and {r.score_kind for r in hybrid} == {"hybrid"}
    assert all(b.signal in ("text", "co-occurrence") for r in hybrid for b in r.because)
    assert hybrid.to_dict()["recommendations"][0]["score_kind"] == "hybrid"
    cold = toy_recommender.recommend("nobody", query="bread", k=2)
    assert {r.score_kind for r in cold} == {"cosine"}
    popular = toy_recommender.recommend("nobody", k=2)
    assert popular.strategy == "popular" and {r.score_kind for r in popular} == {"popularity"}


def test_query_steers_and_cold_start(toy_recommender) -> None:
    steered = toy_recommender.recommend("spacefan", query="tent for mountain camping", k=1)
    assert steered.strategy == "hybrid+query" and steered[0].item.id == "h2"
    cold = toy_recommender.recommend("nobody", query="oven for cake", k=2)
    assert cold.strategy == "query" and cold[0].item.id == "c2" and cold[0].because == ()
    popular = toy_recommender.recommend("nobody", k=3)
    assert popular.strategy == "popular" and len(popular) == 3
    assert popular.to_dict()["strategy"] == "popular"


def test_feedback_changes_the_next_answer(toy_recommender) -> None:
    first = toy_recommender.recommend("spacefan", k=2)[0].item.id
    toy_recommender.add_feedback("spacefan", first, liked=False)
    assert first not in {r.item.id for r in toy_recommender.recommend("spacefan", k=8)}
    toy_recommender.add_feedback("spacefan", "h1", liked=True)
    assert "h1" in {i.id for i, _ in toy_recommender.history("spacefan")}
    with pytest.raises(UnknownItemError):
        toy_recommender.add_feedback("spacefan", "ghost", liked=True)


def test_json_shape(toy_recommender) -> None:
    out = toy_recommender.recommend("spacefan", k=2).to_dict()
    assert set(out) == {"user_id", "query", "strategy", "recommendations"}
    rec = out["recommendations"][0]
    assert set(rec) == {
        "item_id", "title", "score", "score_kind", "rank", "because", "blurb", "blurb_source", "grounded"
    }  # fmt: skip
    assert set(rec["because"][0]) == {"item_id", "title", "similarity", "also_liked_by", "signal"}
    assert rec["blurb"] is None


def test_errors(make_recommender, toy_recommender) -> None:
    with pytest.raises(IndexNotBuiltError, match="recbot ingest"):
        make_recommender(data_dir=toy_recommender.settings.data_dir.parent / "empty").recommend("u")
    with pytest.raises(ConfigError):
        toy_recommender.recommend("spacefan", k=0)


def test_a_second_process_sees_a_new_ingest(make_recommender, toy_recommender, tmp_path: Path) -> None:
    other = make_recommender(data_dir=toy_recommender.settings.data_dir)
    other.ingest(write_jsonl(tmp_path / "more.jsonl", [*TOY_ITEMS, {"id": "z1", "title": "robots stars space robots"}]))
    assert toy_recommender.recommend("spacefan", k=1)[0].item.id == "z1"


def test_unknown_category_is_a_clear_error_and_case_is_forgiven(toy_recommender) -> None:
    from recbot.errors import FilterError

    assert {r.item.category for r in toy_recommender.recommend("spacefan", k=3, category="KITCHEN")} == {"kitchen"}
    with pytest.raises(FilterError, match="unknown category 'toys'; the catalog has"):
        toy_recommender.recommend("spacefan", category="toys")


def test_an_ask_is_understood_before_it_is_embedded(toy_recommender) -> None:
    """Negations, named titles and vague asks become constraints, not bags of words."""
    catalog = toy_recommender.storage.items()
    no_robots = toy_recommender.recommend("baker", query="no robots", k=8, blurbs=False)
    assert no_robots and all("robots" not in catalog[r.item.id].tags for r in no_robots)
    assert no_robots.understood is not None and no_robots.understood.exclude_tags == ("robots",)
    assert no_robots.to_dict()["understood"]["text"] == "not robots"

    like = toy_recommender.recommend("baker", query="something like Galaxy Robots but a film", k=3, blurbs=False)
    assert like.understood is not None and like.understood.anchors == ("s4",) and like.understood.category == "films"
    assert all(r.item.category == "films" and r.item.id != "s4" for r in like)

    vague = toy_recommender.recommend("spacefan", query="more please", k=3, blurbs=False)
    plain = toy_recommender.recommend("spacefan", k=3, blurbs=False)
    assert [r.item.id for r in vague] == [r.item.id for r in plain]
    assert vague.understood is not None and vague.understood.vague
    assert "understood" not in plain.to_dict()


def test_a_negated_phrase_drops_what_stands_out_as_close_to_it(toy_recommender) -> None:
    """'nothing to explore' names no tag or title: the item whose text is about exploring goes,
    other space items stay (the cut is relative to the catalog, not a topic ban)."""
    recs = toy_recommender.recommend("baker", query="nothing to explore", k=8, blurbs=False)
    assert recs.understood is not None and recs.understood.avoid_text == ("explore",)
    got = {r.item.id for r in recs}
    assert "s1" not in got and {"s2", "s4"} <= got


def test_like_a_title_prefers_items_that_share_its_facts(toy_recommender) -> None:
    """'like Galaxy Robots but a book': the book tagged robots like the game comes first."""
    recs = toy_recommender.recommend("baker", query="like Galaxy Robots but a book", k=2, blurbs=False)
    assert recs[0].item.id == "s1"


def test_a_follow_up_is_resolved_against_the_previous_answer(toy_recommender) -> None:
    first = toy_recommender.recommend("baker", k=3, blurbs=False)
    shown = [r.item.id for r in first]
    again = toy_recommender.recommend("baker", query="not that one", k=3, blurbs=False, previous=shown)
    assert shown[0] not in {r.item.id for r in again}


def test_an_ask_nothing_meets_is_relaxed_out_loud(toy_recommender) -> None:
    recs = toy_recommender.recommend("baker", query="a film, no baking, not space", k=3, blurbs=False)
    assert recs, "the answer is never empty because of the ask's constraints"
    assert recs.relaxed and recs.relaxed.startswith("nothing in the catalog is films, not baking, not space")
    assert recs.to_dict()["understood"]["relaxed"] == recs.relaxed


def test_a_negated_category_also_excludes_items_tagged_with_it(toy_recommender) -> None:
    """MovieLens makes the first genre the category and every genre a tag: 'no thriller'
    must drop a Drama tagged Thriller too."""
    from recbot.ask import Interpretation
    from recbot.serving import excluded_by
    from recbot.types import Item

    catalog = {"a": Item("a", "A", category="Drama", tags=("Drama", "Thriller")), "b": Item("b", "B", category="Drama")}
    understood = Interpretation(
        category=None, exclude_categories=("Thriller",), exclude_tags=(), anchors=(), exclude_items=(),
        avoid_text=(), soft="", vague=False, surprise=False, refers_to=(), reject_previous=(), informativeness=0.5,
    )  # fmt: skip
    assert excluded_by(understood, catalog, asks_for_similar=False) == {"a"}


def test_a_thumbs_up_reaches_the_collaborative_model_without_reingesting(toy_recommender) -> None:
    def together(rec) -> int:  # type: ignore[no-untyped-def]
        recs = rec.recommend("spacefan", k=10, blurbs=False)
        (s4,) = [r for r in recs if r.item.id == "s4"]
        return sum(b.also_liked_by for b in s4.because if b.item_id in ("s1", "s2"))

    before = together(toy_recommender)
    toy_recommender.add_feedback("fan2", "s1", liked=True)
    toy_recommender.add_feedback("fan2", "s4", liked=True)
    assert together(toy_recommender) == before + 1


@pytest.mark.parametrize("exact_max_items", [10_000, 0])  # the in-memory index, then Chroma's where
def test_popular_answers_use_the_stores_filters(make_recommender, toy_files, exact_max_items: int) -> None:
    rec = make_recommender(exact_search_max_items=exact_max_items)
    rec.ingest(toy_files[0], interactions=toy_files[1])
    popular = rec.recommend("nobody", k=5, filters={"tags": "baking"})
    assert popular.strategy == "popular" and popular
    assert all("baking" in r.item.tags for r in popular)
    assert {r.item.id for r in rec.recommend("nobody", k=5, category="outdoors")} == {"h1", "h2"}


def test_a_cold_user_gets_the_most_popular_and_a_new_like_moves_them(toy_recommender) -> None:
    """The popular path reads a popularity order sorted once per count; it is the
    definition (most users first, ties by id), and feedback re-sorts it."""
    rec = toy_recommender
    rec.settings = rec.settings.replace(mmr_lambda=1.0, candidates=3)  # relevance alone, 3 candidates

    def expected() -> list[str]:
        pop = rec.storage.popularity()
        return sorted(rec.catalog(), key=lambda i: (-pop.get(i, 0), i))[:3]

    got = rec.recommend("nobody", k=3, blurbs=False)
    assert got.strategy == "popular" and [r.item.id for r in got] == expected()
    rare = next(i for i in sorted(rec.catalog()) if i not in expected())
    for user in ("fan2", "baker", "spacefan", "newcomer"):
        rec.add_feedback(user, rare, liked=True)
    again = [r.item.id for r in rec.recommend("nobody", k=3, blurbs=False)]
    assert again == expected() and again[0] == rare


def test_the_change_token_moves_on_any_commit_from_any_connection(tmp_path) -> None:
    """recommend skips its SQLite reads while the token stands still; it must move for a
    commit through this Storage and through another connection (another process)."""
    from recbot.storage import Storage

    mine, theirs = Storage(tmp_path / "s.sqlite3"), Storage(tmp_path / "s.sqlite3")
    mine.set_meta("version", "1")
    before = mine.change_token()
    assert mine.change_token() == before  # reading changes nothing
    mine.get_meta("version")
    assert mine.change_token() == before
    theirs.set_meta("version", "2")
    after = mine.change_token()
    assert after != before and mine.get_meta("version") == "2"
    mine.set_meta("interactions", "x")
    assert mine.change_token() != after


@pytest.mark.parametrize("pool", [False, True])  # the exact path, then the pool path forced on
def test_feedback_updates_the_collaborative_model_to_what_a_refit_gives(
    make_recommender, toy_files, monkeypatch, pool: bool
) -> None:
    """Thumbs up and down, a removal and a new user are applied to the model in place
    (no refit), and the answers are then a freshly opened Recommender's, scores and
    reasons included; forgetting a user refits."""
    from recbot.retrieval.hybrid import CollabModel

    rec = make_recommender(hybrid_pool=pool)
    rec.ingest(toy_files[0], interactions=toy_files[1])
    users = ["spacefan", "baker", "fan2", "nobody-yet"]
    rec.recommend("spacefan", k=5, blurbs=False)  # fitted here
    fits: list[int] = []
    fit = CollabModel.fit.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(CollabModel, "fit", classmethod(lambda cls, *a, **kw: fits.append(1) or fit(cls, *a, **kw)))
    rec.add_feedback("fan2", "s1", liked=True)
    rec.add_feedback("fan2", "s4", liked=True)
    assert rec.recommend("spacefan", k=5, blurbs=False)  # updated here
    rec.add_feedback("nobody-yet", "c1", liked=True)
    rec.add_feedback("baker", "c2", liked=False)
    rec.remove_from_history("spacefan", "s2")

    def answers(r):  # type: ignore[no-untyped-def]
        out = {}
        for user in users:
            recs = r.recommend(user, k=5, blurbs=False)
            out[user] = (
                recs.strategy,
                [(x.item.id, x.score, [(b.item_id, b.also_liked_by) for b in x.because]) for x in recs],
            )
        return out

    updated = answers(rec)
    assert fits == []
    assert updated["spacefan"][0] == ("hybrid-pool" if pool else "hybrid")
    saved = Path(rec.settings.data_dir) / COLLAB_FILE
    assert saved.is_file() == pool  # ingest saves the pool path's model, and only where the pool serves
    # a new process on the pool path loads the model ingest saved and replays the log
    loaded = answers(make_recommender(data_dir=rec.settings.data_dir, hybrid_pool=pool))
    assert bool(fits) != pool
    assert loaded == updated
    saved.unlink(missing_ok=True)
    fits.clear()
    fresh = answers(make_recommender(data_dir=rec.settings.data_dir, hybrid_pool=pool))
    assert fits  # the fresh Recommender fitted its own
    assert updated == fresh
    rec.index.save_collab()  # where the pool serves: saved again
    fits.clear()
    rec.forget("nobody-yet")
    assert not saved.exists()  # it held their interactions
    rec.recommend("spacefan", k=5, blurbs=False)
    assert fits == [1]  # the log names no forgotten user: refitted


def test_a_like_during_ingests_tuning_reaches_the_model_it_saves(make_recommender, toy_files, monkeypatch) -> None:
    """Ingest reads the histories, tunes (seconds to a minute at scale), then saves the
    pool path's model: a like another process writes meanwhile is replayed from the log
    by whoever loads that model, because its position was taken before the read."""
    from recbot.index import Index

    rec = make_recommender(hybrid_pool=True)
    real = Index.tune

    def tune_while_someone_likes(self, **kwargs):  # type: ignore[no-untyped-def]
        chosen = real(self, **kwargs)
        make_recommender(data_dir=rec.settings.data_dir, hybrid_pool=True).add_feedback("latecomer", "s1", liked=True)
        return chosen

    monkeypatch.setattr(Index, "tune", tune_while_someone_likes)
    rec.ingest(toy_files[0], interactions=toy_files[1])
    monkeypatch.undo()
    pool = make_recommender(data_dir=rec.settings.data_dir, hybrid_pool=True)._pool_model()
    assert pool is not None and pool.model.user_ids is not None
    assert "latecomer" in pool.model.user_ids.tolist()


def test_the_interaction_log_names_who_changed_and_never_a_forgotten_user(tmp_path, monkeypatch) -> None:
    import recbot.storage
    from recbot.storage import Storage
    from recbot.types import Interaction

    storage = Storage(tmp_path / "s.sqlite3")
    assert storage.interaction_seq() == 0 and storage.interaction_changes(0) == (0, [])
    storage.upsert_interactions([Interaction("b", "x", 5.0, None, 1), Interaction("a", "x", 5.0, None, 1)])
    seq = storage.interaction_seq()
    storage.remove_interaction("c", "y")
    storage.upsert_interactions([Interaction("a", "y", 5.0, None, 2)])
    assert storage.interaction_changes(0) == (storage.interaction_seq(), ["a", "b", "c"])
    assert storage.interaction_changes(seq) == (storage.interaction_seq(), ["a", "c"])
    now = storage.interaction_seq()
    assert storage.interaction_changes(now) == (now, [])
    storage.upsert_interactions([Interaction("secret-user", "x", 5.0, "my review", 3)])
    storage.forget_user("secret-user")
    assert storage.interaction_changes(now)[1] is None  # refit
    assert not storage._query("SELECT 1 FROM interaction_log WHERE user_id = 'secret-user'")
    latest = storage.interaction_seq()
    monkeypatch.setattr(recbot.storage, "LOG_KEEP", 2)  # a reader the kept log no longer reaches
    for user in "pqr":
        storage.remove_interaction(user, "x")
    assert storage.interaction_changes(latest)[1] is None
    assert storage.interaction_changes(storage.interaction_seq() - 1)[1] == ["r"]
    storage.close()
