import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from recbot.eval.data import load_dataset
from recbot.eval.runner import run_retrieval
from tests.conftest import KeywordEmbedder


@pytest.fixture
def amazon_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        group = u % 3  # three taste groups over 15 items
        items = [f"A{group}{j}" for j in rng.permutation(5)]
        for t, asin in enumerate(items):
            rows.append(
                {
                    "reviewerID": f"r{u:02d}",
                    "asin": asin,
                    "overall": 5,
                    "summary": f"group{group} thing",
                    "reviewText": f"words about {asin} held{u}t{t}",
                    "unixReviewTime": 100 + t // 2,
                }
            )
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_split_follows_the_protocol(amazon_file: Path) -> None:
    data = load_dataset(f"amazon:{amazon_file}")
    assert len(data.items) == 15 and len(data.users) == 30
    hist = data.test.train["r00"] + [data.test.held_out["r00"]]
    keys = [(h.timestamp, h.item_id) for h in hist]
    assert keys == sorted(keys)  # ties on the same day broken by asin
    assert data.valid.held_out["r00"] == data.test.train["r00"][-1]
    held = data.test.held_out["r00"]
    assert "held0t4" not in data.test.item_text[held.item_id]  # the held-out review is not item text


def test_runner_is_deterministic_and_beats_random(amazon_file: Path, tmp_path: Path) -> None:
    data = load_dataset(f"amazon:{amazon_file}")
    a = run_retrieval(data, tmp_path / "a", encoder=KeywordEmbedder(), seed=3)
    run_retrieval(data, tmp_path / "b", encoder=KeywordEmbedder(), seed=3)
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    methods = a["methods"]
    assert set(methods) == {
        "random",
        "popularity",
        "item_knn",
        "item_knn_last20",
        "ease",
        "bert",
        "hybrid",
        "hybrid_mmr",
        "hybrid_pool",
    }
    assert {
        "hr@10",
        "ndcg@10",
        "mrr@10",
        "precision@5",
        "recall@20",
        "f1@10",
        "coverage@10",
        "avg_popularity@10",
    } <= set(methods["hybrid"])
    # users only ever meet their own group's items: co-occurrence finds the held-out item
    assert methods["item_knn"]["hr@5"] == 1.0 and methods["hybrid"]["hr@5"] == 1.0
    assert methods["ease"]["hr@5"] == 1.0
    # one held-out item: precision@K = HR@K / K and recall@K = HR@K, as the report says
    for name, m in methods.items():
        assert m["precision@10"] == pytest.approx(m["hr@10"] / 10, abs=1e-6), name
        assert m["recall@10"] == m["hr@10"], name
    # the BERT profile is the served one: the users' own training reviews move it
    assert a["protocol"]["reviews_in_profile"] == sum(len(h) for h in data.test.train.values())
    # MMR re-orders the hybrid's candidates; here the target stays in the top 5
    assert methods["hybrid_mmr"]["hr@5"] == 1.0
    # the pool path, forced on: with every item in the pool and the sample it is the hybrid
    assert methods["hybrid_pool"] == methods["hybrid"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert report.startswith("# Retrieval evaluation")
    assert "precision@K = hits/K (at most 1/K) and recall@K = HR@K" in report
    assert (tmp_path / "a" / "metrics_by_k.png").stat().st_size > 1000


def test_the_pool_path_ranks_its_candidates_by_the_hybrid(amazon_file: Path) -> None:
    """A pool smaller than the catalog holds the best of each source; its ranking is the
    hybrid's order restricted to the candidates when the sample is the whole catalog."""
    from recbot import Settings
    from recbot.eval.baselines import components
    from recbot.eval.runner import pool_top
    from recbot.retrieval.hybrid import blend

    data = load_dataset(f"amazon:{amazon_file}")
    users = data.users[:6]
    vectors = np.asarray(KeywordEmbedder().encode([data.test.item_text[i] for i in data.items]), dtype=np.float32)
    comp = components(users, data.items, data.test.train, vectors, settings=Settings())
    weights = {"knn": 1.0, "bert": 0.5}
    full = blend(comp.parts, weights)
    for size in (1, 2, 15):
        top = pool_top(comp, weights, data.items, 3, size)
        for u in range(len(users)):
            seen = set(comp.seen[u].indices.tolist())
            listed = top[u].tolist()
            fresh = [j for j in listed if j not in seen]
            assert listed[: len(fresh)] == fresh  # seen items only pad a pool smaller than k
            assert len(fresh) >= min(3, size)
            for a, b in itertools.pairwise(fresh):  # in the hybrid's order
                assert full[u, a] >= full[u, b] - 1e-5
    best = pool_top(comp, weights, data.items, 3, 15)
    for u in range(len(users)):
        unseen = [j for j in range(len(data.items)) if j not in set(comp.seen[u].indices.tolist())]
        assert full[u, best[u][0]] == pytest.approx(max(full[u, j] for j in unseen), abs=1e-5)


def test_generation_eval_runs_with_baselines(amazon_file: Path, tmp_path: Path, tiny_gpt2: Path) -> None:
    from recbot import Settings
    from recbot.eval.generation import run_generation
    from recbot.generation.writer import GPT2Writer

    data = load_dataset(f"amazon:{amazon_file}")
    writer = GPT2Writer.load(str(tiny_gpt2), Settings.create(max_new_tokens=8, num_candidates=1))
    result = run_generation(data, tmp_path / "g", writer=writer, encoder=KeywordEmbedder(), max_users=12)
    methods = result["methods"]
    assert set(methods) == {"recbot", "template", "copy_review", "constant", "constant_best", "constant_issue"}
    for name in ("constant", "constant_best", "constant_issue"):
        assert methods[name]["usr"] == round(1 / 12, 4)  # one sentence for everyone
    assert methods["recbot"]["grounding_rate"] == 1.0  # every final blurb names its item
    assert 0.0 <= methods["recbot"]["templated_rate"] <= 1.0
    for name in ("bleu1", "rouge1", "fmr", "distinct2", "personalisation"):
        assert name in methods["copy_review"]
    assert (tmp_path / "g" / "blurb_lengths.png").exists() and "PEPLER" in (tmp_path / "g" / "report.md").read_text()


def test_best_constant_picks_the_sentence_closest_to_the_validation_reviews() -> None:
    from collections import Counter

    from recbot.eval.generation import best_constant

    summaries = Counter({"Great": 5, "Good strings": 3, "Awful": 1})
    sentences = Counter({"Highly recommended.": 4, "They stay in tune.": 2})
    refs = ["Good strings. They stay in tune.", "Good strings, they stay in tune for weeks."]
    text, score = best_constant(summaries, sentences, refs)
    # the most frequent ("Great. Highly recommended.") shares no word with the references
    assert text == "Good strings. They stay in tune."
    assert score > 100.0  # BLEU-1 + ROUGE-L, each 0-100: near-perfect on the first reference
    assert best_constant(summaries, sentences, []) == ("", 0.0)


def test_generation_eval_sharded_by_accelerate_equals_one_process(
    amazon_file: Path, tmp_path: Path, tiny_gpt2: Path, tiny_bert: Path
) -> None:
    """Two processes (torchrun; accelerate's PartialState) write half the batches each and
    the main one reports: the same metrics.json as one process."""
    import os
    import subprocess
    import sys

    config = tmp_path / "settings.toml"
    config.write_text("generation_batch = 4\nmax_new_tokens = 8\nnum_candidates = 1\n")
    common = [
        "-m",
        "recbot.cli",
        "--config",
        str(config),
        "--encoder",
        str(tiny_bert),
        "eval",
        "generation",
        "--dataset",
        f"amazon:{amazon_file}",
        "--generator",
        str(tiny_gpt2),
        "--max-users",
        "12",
        "--canaries",  # the canary generator trains in one process (tests/test_eval_privacy.py)
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True)
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    # torchrun is what `accelerate launch --multi_gpu` runs; on CPUs accelerate itself
    # would need mpirun, so launch the processes with torchrun directly
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run([*launcher, *common, "--out", str(tmp_path / "two")], env=env, capture_output=True)
    assert two.returncode == 0, two.stderr.decode()[-2000:]
    assert "process 1 wrote 1 of 3 batches" in two.stderr.decode()  # the second process did its share
    assert (tmp_path / "one" / "metrics.json").read_text() == (tmp_path / "two" / "metrics.json").read_text()
