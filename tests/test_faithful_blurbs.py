"""Faithful, fluent, personal blurbs: the support rule, the salad rules, the decoding
constraints, and a generator trained in a fixture that writes blurbs that pass."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from recbot import Settings
from recbot.generation.constrain import AllowedSentences
from recbot.generation.fluency import FluencyModel, salad_reasons
from recbot.generation.guard import TitleIndex, check_blurb
from recbot.generation.prompts import build_prompt, fact_continuation, sentence_options, unframed
from recbot.generation.support import misquotes, personal_evidence, support_for, unsupported, words
from recbot.generation.train import TrainConfig
from recbot.generation.writer import GPT2Writer
from recbot.types import Interaction, Item

DEMO = Path(__file__).resolve().parents[1] / "src" / "recbot" / "demo"


def _demo() -> tuple[dict[str, Item], dict[str, list[tuple[Item, Interaction]]]]:
    from recbot.catalog import read_catalog, read_interactions

    catalog = {item.id: item for item in read_catalog(DEMO / "catalog.jsonl").items}
    history: dict[str, list[tuple[Item, Interaction]]] = {}
    for h in read_interactions(DEMO / "interactions.jsonl").interactions:
        history.setdefault(h.user_id, []).append((catalog[h.item_id], h))
    return catalog, history


CATALOG, HISTORY = _demo()
INDEX = TitleIndex(CATALOG.values())
BY_TITLE = {item.title: item for item in CATALOG.values()}

# The blurbs quoted in issue 10, as the old demo printed them: (user, because, item, blurb).
QUOTED = [
    (
        "u1",
        "Project Hail Mary",
        "Foundation",
        "Because you liked Project Hail Mary, Foundation should suit you. A rat with a kind, a galactic empire and "
        "plans to the science and the humour. The funniest and a galactic, the science age that favourite. "
        "The the science's winter.",
    ),
    (
        "u1",
        "Project Hail Mary",
        "The Shining",
        "Because you liked Project Hail Mary, The Shining could be your next favourite. The Gibson's winter "
        "caretaker slowly comes, a village apart in an isolated, haunted hotel.",
    ),
    (
        "u2",
        "Sourdough Starter Kit",
        "Instant-Read Thermometer",
        "Because you liked Sourdough Starter Kit, Instant-Read Thermometer is a look. A two- next pick.",
    ),
    (
        "u3",
        "Dreadnought Acoustic Guitar",
        "Solid-Body Electric Guitar",
        "Because you liked Dreadnought Acoustic Guitar, Solid-Body Electric Guitar is a natural next pick. Two "
        "single-coil pickups, a maple neck and a maple-coil-coil, cutting tone for rock, with a maple rock, blues "
        "and funk.",
    ),
    (
        "u9",
        "Portal 2",
        "Outer Wilds",
        "Because you liked Portal 2, Outer Wilds is a look. A solar system stuck in a time. The funniest and the "
        "humour.",
    ),
]


def _guard(  # type: ignore[no-untyped-def]
    user: str, because: Item | str, item: Item | str, blurb: str, *, frames: bool = True, fluency=None
):
    item = BY_TITLE[item] if isinstance(item, str) else item
    because = BY_TITLE[because] if isinstance(because, str) else because
    history = HISTORY[user]
    lead = build_prompt(item, history, because).opening
    return check_blurb(
        blurb,
        item,
        INDEX,
        allowed={i.id for i, _ in history},
        support=support_for(item, history, because),
        lead=lead,
        frames=frames,
        because=because,
        fluency=fluency,
    )


@pytest.mark.parametrize(("user", "because", "item", "blurb"), QUOTED)
def test_the_quoted_blurbs_are_rejected(user: str, because: str, item: str, blurb: str) -> None:
    assert not _guard(user, because, item, blurb).ok


@pytest.mark.parametrize(("user", "because", "item", "blurb"), QUOTED)
def test_the_quoted_blurbs_are_rejected_even_without_the_frame_rule(
    user: str, because: str, item: str, blurb: str
) -> None:
    """What a review-taught generator's guard checks (no frames): support, quotes, salad rules."""
    fluency = FluencyModel.fit([i.description for i in CATALOG.values()])
    assert not _guard(user, because, item, blurb, frames=False, fluency=fluency).ok


def test_hallucinated_words_and_spliced_copies_are_unsupported() -> None:
    item = BY_TITLE["Solid-Body Electric Guitar"]
    support = support_for(item, HISTORY["u3"], BY_TITLE["Dreadnought Acoustic Guitar"])
    assert unsupported(" Two single-coil pickups and a maple neck.", support) == []
    assert unsupported(" A maple-coil-coil, made by Gibson.", support) == ["maple-coil-coil", "gibson"]
    verdict = _guard(
        "u3", "Dreadnought Acoustic Guitar", "Solid-Body Electric Guitar",
        "Because you liked Dreadnought Acoustic Guitar, Solid-Body Electric Guitar is guitar too. Made by Gibson.",
        frames=False,
    )  # fmt: skip
    assert verdict.reason == "unsupported word 'gibson'"


def test_a_liked_items_tag_is_no_fact_about_another_item() -> None:
    """'Stand Mixer is also light' was once written: 'light' is a tag of a film u2 liked."""
    support = support_for(BY_TITLE["Stand Mixer"], HISTORY["u2"], BY_TITLE["Sourdough Starter Kit"])
    assert unsupported(" is also light.", support) == ["light"]


def test_salad_rules() -> None:
    assert salad_reasons("The the science's winter.") == ["doubled word 'the'"]
    assert salad_reasons("Great price and the.") == ["'the' before '.'", "sentence ends on 'the'"]
    assert salad_reasons("A two- next pick.") == ["dangling hyphen in 'two-'"]
    assert salad_reasons("A maple-coil-coil neck.") == ["spliced compound 'maple-coil-coil'"]
    assert salad_reasons("Had to play with the lights on. Daft and brilliant, I laughed all the way through.") == []


def test_fluency_model_prefers_real_sentences_and_backs_off_for_unseen_contexts() -> None:
    model = FluencyModel.fit([i.description for i in CATALOG.values()])
    real = model.score("An angel and a demon who rather like Earth team up to stop the apocalypse.")
    salad = model.score("Apocalypse the team demon up an Earth like stop who rather to and angel.")
    assert real > salad + 3
    # a known word after a context never seen is unlikely, not impossible
    assert -20 < model.logprob("zzz", "qqq", "angel") < model.logprob("<s>", "an", "angel")


def test_misquotes() -> None:
    item, because = BY_TITLE["Good Omens"], BY_TITLE["The Hitchhiker's Guide to the Galaxy"]
    support = support_for(item, HISTORY["u1"], because)
    ok = ' is comedy and light too. You wrote of it: "Daft and brilliant, I laughed all the way through."'
    assert misquotes(ok, support) == []
    assert misquotes(' You wrote of it: "Loved the puzzles."', support) == [
        "quote not from the user's review of \"The Hitchhiker's Guide to the Galaxy\""
    ]
    assert misquotes(' You wrote of it: "Daft and wonderful."', support)[0].startswith("quote not in the user's")
    assert misquotes(" You wrote of the Greek underworld again.", support) == [
        "says what the user wrote without quoting it"
    ]


def test_the_template_is_personal_beyond_its_opening_and_passes_every_check() -> None:
    item, because = BY_TITLE["Good Omens"], BY_TITLE["The Hitchhiker's Guide to the Galaxy"]
    history = HISTORY["u1"]
    cont = fact_continuation(item, because, history)
    assert cont == (
        ' is another comedy and light pick. You wrote of it: "Daft and brilliant, I laughed all the way through." '
        "An angel and a demon who rather like Earth team up to stop the apocalypse."
    )
    support = support_for(item, history, because)
    assert personal_evidence(cont, item, support, because) == [
        "own words: brilliant, daft, laughed, through, way",
        "shares comedy",
        "shares light",
    ]
    assert unframed(cont, item, because) == []
    assert _guard("u1", because, item, build_prompt(item, history, because).opening + cont).ok


def test_templates_of_every_demo_user_pass_the_full_guard() -> None:
    for user, history in HISTORY.items():
        liked = [i for i, h in history if h.rating is None or h.rating >= 4]
        for item in list(CATALOG.values())[::7]:
            for because in liked[:3]:
                cont = fact_continuation(item, because, history)
                blurb = build_prompt(item, history, because).opening + cont
                verdict = _guard(user, because, item, blurb)
                assert verdict.ok or "names another catalog item" in str(verdict.reason), (blurb, verdict)


# -- decoding constraints on a random tiny GPT-2: whatever it prefers, it cannot leave the set


@pytest.fixture
def greedy(tiny_gpt2: Path) -> GPT2Writer:
    return GPT2Writer.load(str(tiny_gpt2), Settings.create(max_new_tokens=24, temperature=0.0, copy_bias=0))


def test_allowed_words_keep_a_random_model_inside_the_support(greedy: GPT2Writer) -> None:
    allowed = [frozenset(words("Star Voyage space robots explore stars galaxy")), frozenset(words("Cake Oven bread"))]
    prompts = ["<|item|> Star Voyage\n<|blurb|> Star Voyage", "<|item|> Cake Oven\n<|blurb|> Cake Oven"]
    out = greedy.generate(
        prompts,
        supports=[support_for(Item("x", "x"), ()).__class__(a, frozenset(), frozenset()) for a in allowed],
        leads=["Star Voyage", "Cake Oven"],
    )
    for (text,), ok in zip(out, allowed, strict=True):
        text = text.split("<|endoftext|>")[0]
        assert words(text), "generated nothing"
        assert set(words(text)) <= ok | set(words("x")) | _connectives(), text


def _connectives() -> set[str]:
    from recbot.generation.support import CONNECTIVES

    return set(CONNECTIVES)


def test_allowed_sentences_make_a_random_model_write_whole_taught_sentences(greedy: GPT2Writer) -> None:
    item, because = BY_TITLE["Good Omens"], BY_TITLE["The Hitchhiker's Guide to the Galaxy"]
    first, rest = sentence_options(item, because, HISTORY["u1"])
    prompt = build_prompt(item, HISTORY["u1"], because)
    processor = AllowedSentences(greedy.tokens, [(first, rest)], 0, 1, greedy.tokenizer.decode)
    assert processor.allowed_next(0, "") and greedy.tokens.eos not in processor.allowed_next(0, "")
    (raw,) = greedy.generate([prompt.text], options=[(first, rest)])[0]
    text = raw.split("<|endoftext|>")[0]
    assert text and _parses(text, first, rest), text


def _parses(text: str, first: list[str], rest: list[str]) -> bool:
    """``text`` is a first sentence, then taught sentences, then possibly the start of
    one (cut by max_new_tokens)."""
    pool, remaining = first, text
    while remaining:
        whole = [s for s in pool if remaining.startswith(s)]
        if not whole:
            return any(s.startswith(remaining) for s in pool)
        remaining = remaining[len(max(whole, key=len)) :]
        pool = rest
    return True


def test_allowed_sentences_parse_check_can_fail() -> None:
    assert not _parses(" is comedy too. A rat.", [" is comedy too."], [" A dog."])
    assert _parses(" is comedy too. A d", [" is comedy too."], [" A dog."])


# -- a generator trained in a fixture: generated, grounded, and the same twice


def _train(rec, out: Path) -> Path:  # type: ignore[no-untyped-def]
    config = TrainConfig(
        base="scratch",
        n_layer=2,
        n_embd=64,
        n_head=2,
        vocab_size=500,
        block_size=256,
        batch_size=8,
        epochs=50,
        max_steps=120,
        eval_every=40,
        patience=5,
        augment_per_item=2,
        checkpoint_every=0,
    )
    rec.train_generator(config, out_dir=out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from recbot import Recommender
    from recbot.recommender import open_storage, open_store

    from .conftest import TOY_INTERACTIONS, TOY_ITEMS, KeywordEmbedder, write_jsonl

    root = tmp_path_factory.mktemp("trained")
    settings = Settings.create(data_dir=root / "data")
    rec = Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=KeywordEmbedder())
    rec.ingest(write_jsonl(root / "c.jsonl", TOY_ITEMS), interactions=write_jsonl(root / "i.jsonl", TOY_INTERACTIONS))
    first = _train(rec, root / "a")
    second = _train(rec, root / "b")
    yield rec, first, second
    rec.close()


def test_two_trainings_give_identical_weights(trained) -> None:  # type: ignore[no-untyped-def]
    _, first, second = trained
    digest = [hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    card = json.loads((first / "card.json").read_text())
    assert card["targets"] == "facts" and card["steps"] <= 120 and "time" not in card["stopped_by"]
    assert card["target_tokens"] > 10


def test_a_trained_generator_writes_generated_grounded_blurbs(trained) -> None:  # type: ignore[no-untyped-def]
    rec, first, _ = trained
    writer = GPT2Writer.load(str(first), rec.settings.replace(max_new_tokens=48))
    assert writer.frames and writer.fluency is not None
    catalog = rec.storage.items()
    history = rec.history("spacefan")
    recs = rec.recommend("spacefan", k=3, blurbs=False)
    out = writer.write(history, recs, catalog)
    assert [r.blurb_source for r in out] == ["generated"] * 3, [r.blurb_note for r in out]
    assert all(r.grounded for r in out)
    for r in out:
        assert r.blurb and r.blurb.startswith("Because you liked")
        assert re.search(r"[.!?]\"?$", r.blurb), r.blurb  # ends on a whole sentence
    # the streamed blurbs go through the same finish and guard
    streamed = [u.done for u in writer.stream_jobs(writer.jobs(history, recs, catalog), catalog) if u.done]
    assert streamed == out


def test_real_review_text_is_not_salad() -> None:
    for text in (
        "Great for Accoustic Guitar. I think I have 3 or 4 of these.",
        "Will Last, Will Hold. I was looking for a decent capo, found this, and have been using it.",
        "Nice strings. These take a while to break in but the tone is smooth and warm.",
        "Easy Easy Easy. Easy to see, Easy to use.",
    ):
        assert salad_reasons(text) == [], text


def test_a_users_review_is_quoted_once_per_list(greedy: GPT2Writer) -> None:
    history = HISTORY["u1"]
    because = BY_TITLE["Project Hail Mary"]
    from recbot import Reason, Recommendation

    recs = [
        Recommendation(BY_TITLE[t], 1.0, n, (Reason(because.id, because.title, 0.5),))
        for n, t in enumerate(["Interstellar", "Foundation"], start=1)
    ]
    first, second = greedy.jobs(history, recs, CATALOG)
    own = ' You wrote of it: "Loved the puzzles, the science and the humour."'
    assert own in first.options[1] and own not in second.options[1]
