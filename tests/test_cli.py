import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from recbot.cli import demo_files, main
from recbot.config import Settings
from tests.conftest import TOY_INTERACTIONS, TOY_ITEMS, write_jsonl

RECBOT = str(Path(sys.executable).parent / "recbot")


@pytest.fixture
def bad_files(tmp_path: Path) -> tuple[Path, Path]:
    catalog = tmp_path / "catalog.jsonl"
    lines = [json.dumps(r) for r in TOY_ITEMS] + [
        json.dumps({"title": "no id"}),
        json.dumps({"id": "e1", "title": ""}),
        json.dumps({"id": "s1", "title": "Star Voyage (dup)"}),
        '{"id": "broken",',
    ]
    catalog.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "u8", "title": "bad \xc3\x28 utf8"}\n')
    inter = write_jsonl(
        tmp_path / "interactions.jsonl",
        [*TOY_INTERACTIONS, {"user_id": "x", "item_id": "s1", "rating": "lots"}, {"user_id": "x", "item_id": "ghost"}],
    )
    return catalog, inter


def cli_ingest(tmp_path: Path, encoder: Path) -> str:
    """Ingest the toy catalog through the CLI into tmp_path/d; returns the data dir."""
    catalog = write_jsonl(tmp_path / "c.jsonl", TOY_ITEMS)
    inter = write_jsonl(tmp_path / "i.jsonl", TOY_INTERACTIONS)
    data = str(tmp_path / "d")
    assert (
        main(["--data-dir", data, "--encoder", str(encoder), "ingest", str(catalog), "--interactions", str(inter)]) == 0
    )
    return data


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECBOT, *args], capture_output=True, text=True, timeout=120)


def test_ingest_reports_every_bad_row_then_strict_fails_without_traceback(tmp_path: Path, bad_files, tiny_bert) -> None:
    data = str(tmp_path / "d")
    out = run(
        "ingest",
        str(bad_files[0]),
        "--interactions",
        str(bad_files[1]),
        "--data-dir",
        data,
        "--encoder",
        str(tiny_bert),
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "10 added" in text and "rejected: 6 rows" in text
    for expected in [
        "catalog.jsonl line 11: field 'id' is missing",
        "catalog.jsonl line 12: field 'title' is empty",
        "catalog.jsonl line 14: is not valid JSON",
        "catalog.jsonl line 15: is not valid UTF-8",
        "interactions.jsonl line 6: field 'rating' must be a number, got 'lots'",
        "interactions.jsonl line 7: field 'item_id' 'ghost' is not in the catalog",
        "note: catalog.jsonl line 13: field 'id' duplicates 's1' from line 1",
    ]:
        assert expected in text
    strict = run("--data-dir", data, "ingest", str(bad_files[0]), "--strict", "--encoder", str(tiny_bert))
    assert strict.returncode == 1
    assert "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines()[-1] == "CatalogError: 4 row(s) rejected; nothing was ingested (--strict)"


def test_recommend_json_and_data_dir_on_both_sides(tmp_path: Path, tiny_bert, capsys) -> None:
    data = cli_ingest(tmp_path, tiny_bert)
    capsys.readouterr()
    assert main(["recommend", "--data-dir", data, "--user", "spacefan", "-k", "3", "--json", "--no-blurbs"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == "spacefan" and len(out["recommendations"]) == 3
    assert {r["item_id"] for r in out["recommendations"]}.isdisjoint({"s1", "s2"})
    assert (
        main(["--data-dir", data, "recommend", "--user", "spacefan", "--category", "kitchen", "--json", "--no-blurbs"])
        == 0
    )
    assert {r["item_id"] for r in json.loads(capsys.readouterr().out)["recommendations"]} == {"c2", "c3"}


def test_eval_asks_reports_interpreter_and_embedding_only(tmp_path: Path, tiny_bert, capsys) -> None:
    data = cli_ingest(tmp_path, tiny_bert)
    cases = write_jsonl(
        tmp_path / "asks.jsonl",
        [
            {"user": "spacefan", "ask": "no robots", "exclude_tags": ["robots"]},
            {"user": "baker", "ask": "something like Galaxy Robots", "anchor": "s4"},
            {"user": "baker", "ask": "a film", "category": "films"},
        ],
    )
    out = tmp_path / "out"
    args = ["--data-dir", data, "eval", "asks", "--cases", str(cases), "--out", str(out), "--k", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "asks.json").read_text())
    assert report["cases"] == 3 and report["k"] == 3 and set(report["modes"]) == {"interpreter", "embedding_only"}
    assert report["modes"]["interpreter"]["satisfied_n"] == 3
    assert "| interpreter | 100.0% (3/3) |" in printed and (out / "asks.md").read_text() in printed
    assert main(["--data-dir", data, "eval", "retrieval"]) == 1  # the ranking evals still need --dataset
    assert "needs --dataset" in capsys.readouterr().err


def test_every_error_a_user_can_hit_is_one_line_word_for_word(tmp_path: Path, tiny_bert, capsys) -> None:
    """The error tree of recbot.errors as the CLI prints it: ``Name: message``, exit 1, no traceback."""
    data = cli_ingest(tmp_path, tiny_bert)
    catalog = write_jsonl(tmp_path / "only-items.jsonl", TOY_ITEMS)
    bad_dir = tmp_path / "bad"
    (bad_dir / "chroma").parent.mkdir()
    (bad_dir / "chroma").write_text("not a directory")
    empty = str(tmp_path / "empty")
    assert main(["--data-dir", empty, "--encoder", str(tiny_bert), "ingest", str(catalog)]) == 0
    capsys.readouterr()
    cases = [
        (
            ["--data-dir", data, "recommend", "--user", "spacefan", "-k", "0"],
            "ConfigError: k must be at least 1, got 0",
        ),
        (
            ["--data-dir", data, "recommend", "--user", "spacefan", "--category", "toys"],
            "FilterError: unknown category 'toys'; the catalog has ['books', 'films', 'games', 'kitchen', 'outdoors']",
        ),
        (["--data-dir", data, "chat", "--auth", "nocolon"], "ConfigError: --auth takes USER:PASS"),
        (
            ["--data-dir", data, "eval", "retrieval"],
            "ConfigError: eval retrieval needs --dataset (movielens:DIR | amazon:FILE | recbot)",
        ),
        (
            ["--data-dir", data, "--encoder", "other-encoder", "recommend", "--user", "spacefan"],
            f"ConfigError: the index in {data} was built with encoder {str(tiny_bert)!r}, not 'other-encoder': "
            "drop --encoder, or index with it in a new --data-dir",
        ),
        (
            ["--data-dir", empty, "train-generator", "--max-steps", "1"],
            "IndexNotBuiltError: no training examples: ingest a catalog and interactions first",
        ),
        (
            ["--data-dir", str(tmp_path / "none"), "recommend", "--user", "u1"],
            f"IndexNotBuiltError: no catalog in {tmp_path / 'none'}; run: recbot ingest CATALOG",
        ),
    ]
    for args, expected in cases:
        assert main(args) == 1, args
        assert capsys.readouterr().err.strip().splitlines() == [expected]
    # causes from below recbot (Chroma's, transformers') are quoted after recbot's own words
    assert main(["--data-dir", str(bad_dir), "recommend", "--user", "u1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"StoreError: cannot open the Chroma directory {bad_dir / 'chroma'} (") and "\n" not in err
    assert main(["--data-dir", str(tmp_path / "e2"), "--encoder", "/no/such/encoder", "ingest", str(catalog)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("ModelNotFoundError: cannot load AutoTokenizer from '/no/such/encoder' offline: ")


def test_a_missing_extra_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["--data-dir", str(tmp_path), "chat"]) == 1
    assert capsys.readouterr().err.strip() == (
        "MissingExtraError: recbot chat needs the 'ui' extra (gradio not installed): pip install 'recbot[ui]'"
    )


def test_tune_and_content_only(tmp_path: Path, tiny_bert, capsys) -> None:
    data = cli_ingest(tmp_path, tiny_bert)
    assert "hybrid weights: defaults" in capsys.readouterr().out  # ingest chose (default) weights
    assert main(["--data-dir", data, "tune"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hybrid weights: defaults (") and "saved" not in out  # the exact path: nothing to save
    config = tmp_path / "pool.toml"
    config.write_text("hybrid_pool = true\n", encoding="utf-8")
    assert main(["--data-dir", data, "--config", str(config), "tune"]) == 0
    assert "saved the pool path's collaborative model" in capsys.readouterr().out
    assert (Path(data) / "collab.npz").is_file()
    for flag, strategy in ((None, "hybrid"), ("--content-only", "profile")):
        args = ["--data-dir", data, "recommend", "--user", "spacefan", "--json", "--no-blurbs"]
        assert main(args + ([flag] if flag else [])) == 0
        assert json.loads(capsys.readouterr().out)["strategy"] == strategy


def test_ingest_can_defer_tuning_and_says_which_weights_stay(tmp_path: Path, tiny_bert, capsys) -> None:
    from recbot.storage import Storage

    catalog = write_jsonl(tmp_path / "c.jsonl", TOY_ITEMS)
    inter = write_jsonl(tmp_path / "i.jsonl", TOY_INTERACTIONS)
    data = str(tmp_path / "d")
    args = ["--data-dir", data, "--encoder", str(tiny_bert), "ingest", str(catalog), "--interactions", str(inter)]
    assert main([*args, "--no-tune"]) == 0
    assert "hybrid weights: defaults (" in (out := capsys.readouterr().out) and "(kept: tuning deferred" in out
    storage = Storage(Path(data) / "recbot.sqlite3")
    assert storage.get_meta("hybrid") is None  # nothing chosen yet
    assert main(["--data-dir", data, "tune"]) == 0
    assert storage.get_meta("hybrid") is not None
    storage.close()


def test_user_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--data-dir", str(tmp_path / "none"), "recommend", "--user", "u1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"IndexNotBuiltError: no catalog in {tmp_path / 'none'}; run: recbot ingest CATALOG"]
    assert main(["--data-dir", str(tmp_path), "ingest", str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err.strip().endswith("missing.jsonl: does not exist")


def test_train_generator_smoke(tmp_path: Path, capsys, tiny_bert: Path) -> None:
    data = cli_ingest(tmp_path, tiny_bert)
    assert (
        main(
            [
                "--data-dir",
                data,
                "train-generator",
                "--base",
                "scratch",
                "--max-steps",
                "2",
                "--layers",
                "2",
                "--width",
                "32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 steps on" in out and "held-out perplexity" in out
    generator = Path(data) / "generator"
    assert {"model.safetensors", "tokenizer.json", "card.json", "README.md", "config.json"} <= {
        p.name for p in generator.iterdir()
    }
    card = json.loads((generator / "card.json").read_text())
    assert card["steps"] == 2 and card["held_out_perplexity"] > 0 and card["base"] == "trained from scratch"
    assert main(["--data-dir", data, "recommend", "--user", "spacefan", "-k", "2", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["recommendations"]
    assert all(r["blurb"] and r["grounded"] in (True, False) for r in recs)


def test_fine_tune_from_a_local_gpt2(tmp_path: Path, toy_recommender, tiny_gpt2: Path) -> None:
    from recbot.generation.train import TrainConfig

    report = toy_recommender.train_generator(TrainConfig(base=str(tiny_gpt2), max_steps=2), out_dir=tmp_path / "ft")
    assert report.base == f"fine-tuned from {tiny_gpt2}" and report.steps == 2
    assert (tmp_path / "ft" / "model.safetensors").exists()


def test_missing_generator_gives_template_blurbs_and_one_notice(
    tmp_path: Path, capsys, tiny_bert: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    data = cli_ingest(tmp_path, tiny_bert)
    capsys.readouterr()
    assert main(["--data-dir", data, "recommend", "--user", "spacefan", "-k", "2", "--json"]) == 0
    captured = capsys.readouterr()
    recs = json.loads(captured.out)["recommendations"]
    assert len(recs) == 2 and all(r["blurb"] and r["blurb_source"] == "template" for r in recs)
    notices = [line for line in captured.err.splitlines() if "template blurbs" in line]
    assert len(notices) == 1 and "recbot train-generator" in notices[0]


def test_help_is_fast() -> None:
    out = run("--help")
    assert out.returncode == 0 and "ingest" in out.stdout


def test_demo_users_get_different_lists_with_reasons(tmp_path: Path, capsys, tiny_gpt2: Path) -> None:
    """The bundled catalog with the real bundled encoder (about 5 s); a tiny generator is
    put in place first, so the demo reuses it instead of training one."""
    data = str(tmp_path / "demo")
    shutil.copytree(tiny_gpt2, tmp_path / "demo" / "generator")
    assert main(["--data-dir", data, "demo", "--no-chat"]) == 0
    out = capsys.readouterr().out
    assert "156 added" in out and "training" not in out
    assert out.count("Because you liked") >= 10  # blurbs for both demo users
    histories = {}
    for line in demo_files()[1].read_text().splitlines():
        row = json.loads(line)
        histories.setdefault(row["user_id"], set()).add(row["item_id"])
    lists = {}
    for user in ["u1", "u2", "u4", "u5"]:
        assert main(["--data-dir", data, "recommend", "--user", user, "-k", "5", "--json", "--no-blurbs"]) == 0
        recs = json.loads(capsys.readouterr().out)["recommendations"]
        assert len(recs) == 5 and all(r["because"] for r in recs)
        assert {r["item_id"] for r in recs}.isdisjoint(histories[user])
        lists[user] = {r["item_id"] for r in recs}
    assert lists["u2"].isdisjoint(lists["u4"]) and lists["u1"].isdisjoint(lists["u5"])


def test_forget_removes_every_row_of_the_user_and_marks_the_generator(tmp_path: Path, tiny_bert, capsys) -> None:
    import sqlite3

    data = cli_ingest(tmp_path, tiny_bert)
    generator = Path(data) / "generator"
    generator.mkdir()
    (generator / "card.json").write_text(json.dumps({"targets": "facts"}))
    corpus = ["space robots explore stars", "great bread from a small oven", "loved the robots so much in it"]
    (generator / "fluency_corpus.txt").write_text("\n".join(corpus) + "\n")
    capsys.readouterr()
    assert main(["--data-dir", data, "forget", "--user", "spacefan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "forgot spacefan: deleted 2 interactions, 0 feedback, 1 review_vectors row(s) (1 review(s))"
    assert "its card lists them under forgotten_users" in out[1]
    db = sqlite3.connect(Path(data) / "recbot.sqlite3")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
        if "user_id" in columns:
            assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = 'spacefan'").fetchone()[0] == 0, table
    db.close()
    for path in Path(data).glob("recbot.sqlite3*"):  # nor left in freed pages or the write-ahead log
        assert b"loved the robots" not in path.read_bytes(), path
    assert json.loads((generator / "card.json").read_text())["forgotten_users"] == ["spacefan"]
    assert "loved the robots" not in (generator / "fluency_corpus.txt").read_text()  # their review, 5 words in a row
    assert "great bread" in (generator / "fluency_corpus.txt").read_text()  # someone else's stays
    assert main(["--data-dir", data, "recommend", "--user", "baker", "-k", "2", "--json", "--no-blurbs"]) == 0
    assert main(["--data-dir", data, "forget", "--user", "spacefan"]) == 1
    assert capsys.readouterr().err.strip().endswith(f"no rows of user 'spacefan' in {data}: nothing to forget")


def _strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_card_without_held_out_examples_is_strict_json_with_null(tmp_path: Path, tiny_bert) -> None:
    """One training example leaves nothing to hold out: the perplexities are null, not NaN
    (which strict JSON parsers refuse), and every reader copes, old NaN cards included."""
    from recbot.generation.train import TrainConfig, train_generator
    from recbot.generation.writer import GPT2Writer, read_card
    from recbot.types import Interaction, Item

    item = Item(id="s1", title="Star Voyage", category="books", tags=("space",), description="space robots explore.")
    config = TrainConfig(base="scratch", n_layer=1, n_embd=16, n_head=2, vocab_size=300, block_size=96, max_steps=1)
    out = tmp_path / "gen"
    report = train_generator(
        {"s1": item}, [Interaction("u", "s1", 5.0, "fine", 1)], {}, out, replace(config, augment_per_item=0)
    )
    assert report.examples_held_out == 0 and report.held_out_perplexity is None and report.unigram_perplexity is None
    card = _strict_json((out / "card.json").read_text())
    assert card["held_out_perplexity"] is None and card["unigram_perplexity"] is None
    assert "held-out perplexity not measured (no held-out examples)" in report.lines()
    assert "Held-out perplexity (target tokens): not measured" in (out / "README.md").read_text()
    assert read_card(out)["held_out_perplexity"] is None
    GPT2Writer.load(str(out), Settings.create())  # the writer reads the card too

    # a card written before this fix, with NaN, reads as null and is rewritten strictly by forget
    data = cli_ingest(tmp_path, tiny_bert)
    generator = Path(data) / "generator"
    generator.mkdir()
    (generator / "card.json").write_text('{"targets": "facts", "held_out_perplexity": NaN}')
    assert read_card(generator) == {"targets": "facts", "held_out_perplexity": None}
    assert main(["--data-dir", data, "forget", "--user", "spacefan"]) == 0
    card = _strict_json((generator / "card.json").read_text())
    assert card["held_out_perplexity"] is None and card["forgotten_users"] == ["spacefan"]


def test_ingest_takes_encoder_workers_into_the_embedder_it_makes() -> None:
    from recbot.cli import _settings, build_parser
    from recbot.recommender import make_embedder

    settings = _settings(build_parser().parse_args(["ingest", "catalog.jsonl", "--encoder-workers", "2"]))
    assert settings.encoder_workers == 2
    assert make_embedder(settings).worker_devices() == ["cpu", "cpu"]
    default = _settings(build_parser().parse_args(["ingest", "catalog.jsonl"]))
    assert make_embedder(default).worker_devices() == ["cpu"]  # in-process on a CPU-only machine
