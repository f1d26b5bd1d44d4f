"""The ``recbot`` command: parses, calls the public API, prints, exits non-zero on errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbot.config import Settings
from recbot.errors import CatalogError, ConfigError, MissingExtraError, RecbotError, UnknownUserError

if TYPE_CHECKING:
    from recbot.recommender import Recommendations, Recommender

logger = logging.getLogger("recbot")


def _common(parent: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before and after the command name: the subcommand's copy only
    # overrides when given (SUPPRESS), so `recbot --data-dir D ingest` works too.
    default = None if top else argparse.SUPPRESS
    parent.add_argument(
        "--data-dir", type=Path, default=default, help="data dir (default: $RECBOT_HOME, else ./.recbot)"
    )
    parent.add_argument("--config", type=Path, default=default, help="TOML file of settings")
    parent.add_argument(
        "--chroma-host", default=default, help="use a Chroma server at this host instead of the embedded store"
    )
    parent.add_argument("--chroma-port", type=int, default=default, help="Chroma server port (default 8000)")
    parent.add_argument("--encoder", default=default, help="BERT model id or path (default: bundled all-MiniLM-L6-v2)")
    parent.add_argument("-q", "--quiet", action="store_true", default=default, help="only errors")


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="USER:PASS: one login; each visitor sees only their own history")
    p.add_argument(
        "--auth-file",
        type=Path,
        help="logins, one USER:PASS per line (# comments); needed, like --auth, to serve beyond 127.0.0.1",
    )
    p.add_argument("--no-blurbs", action="store_true", help="serve without blurbs (loads no generator)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recbot", description="Generative recommender chatbot.")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, top=False)
        return p

    p = command("ingest", "validate a catalog (and interactions), embed what changed, update the index")
    p.add_argument("path", nargs="?", type=Path, help="catalog file or MovieLens directory")
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv", "movielens", "amazon"])
    p.add_argument("--interactions", type=Path, help="interactions file (JSONL or CSV)")
    p.add_argument("--strict", action="store_true", help="exit 1 and write nothing if any row is rejected")
    p.add_argument(
        "--holdout-last",
        action="store_true",
        help="Amazon: build item text without each user's last review (held out for evaluation)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="keep the hybrid's weights (and saved model) as they are; run `recbot tune` after the last file",
    )
    p.add_argument(
        "--encoder-workers",
        type=int,
        help="processes that encode (each loads the encoder): 0, the default, one per GPU on CUDA, else in-process",
    )

    p = command("recommend", "recommend items to a user")
    p.add_argument("--user", required=True, help="user id (unknown: cold start)")
    p.add_argument("--query", help="free-text ask, e.g. 'something lighter than Dune'")
    p.add_argument("-k", type=int, default=None, help="number of items (default 5)")
    p.add_argument("--category", help="only items of this category")
    p.add_argument("--surprise", action="store_true", help="favour diversity")
    p.add_argument(
        "--content-only", action="store_true", help="rank by text similarity alone (no collaborative signals)"
    )
    p.add_argument("--no-blurbs", action="store_true", help="skip blurb generation (loads no generator)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    command(
        "tune",
        "choose the hybrid ranking's weights on the stored interactions and, past the exact-search "
        "threshold, save the pool path's model (ingest does both on change)",
    )

    p = command("train-generator", "train (or fine-tune) the GPT-2 blurb generator on the ingested data")
    p.add_argument("--base", default="auto", help="auto | scratch | a GPT-2 model id or path to fine-tune")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out checks (convergence)")
    p.add_argument("--patience", type=int, default=2, help="stop after this many checks without improvement")
    p.add_argument(
        "--targets", choices=["auto", "facts", "reviews"], default="auto", help="what the model learns to write"
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="also stop after this many seconds (off by default: the result then depends on the machine's speed)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--holdout-last", action="store_true", help="hold out each user's last interaction for evaluation")
    p.add_argument("--augment", type=int, default=3, help="fact-based examples per catalog item")
    p.add_argument("--layers", type=int, default=4, help="from scratch: transformer layers")
    p.add_argument("--width", type=int, default=256, help="from scratch: embedding width")
    p.add_argument("--out", type=Path, default=None, help="where to save (default: DATA_DIR/generator)")
    p.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        metavar="E",
        help="train with differential privacy (DP-SGD, needs recbot[privacy]) spending at most this epsilon "
        "per training example; a user with m examples is covered at about m x E",
    )
    p.add_argument(
        "--dp-delta",
        type=float,
        default=None,
        metavar="D",
        help="with --dp-epsilon: delta (default: the largest power of ten below 1/examples, at most 1e-5)",
    )
    p.add_argument(
        "--dp-max-grad-norm",
        type=float,
        default=1.0,
        metavar="C",
        help="with --dp-epsilon: clip each example's gradient to this L2 norm (default 1.0)",
    )

    p = command("eval", "offline evaluation: ranking and blurbs on real data (leave-last-out), asks on this data dir")
    p.add_argument("what", choices=["retrieval", "generation", "asks"], help="what to evaluate")
    p.add_argument("--generator", default=None, help="generation: GPT-2 path (default: DATA_DIR/generator)")
    p.add_argument(
        "--dataset", default=None, help="retrieval, generation: movielens:DIR | amazon:FILE | recbot (this data dir)"
    )
    p.add_argument(
        "--k",
        type=int,
        default=None,
        help="the cut-off reported first (default 10; 5, 10 and 20 are all computed); asks: answer size (default 5)",
    )
    p.add_argument(
        "--cases",
        type=Path,
        default=None,
        help="asks: a JSON-lines file of asks with checkable constraints (default: the bundled demo asks, "
        "unless --generated is given)",
    )
    p.add_argument(
        "--generated",
        type=int,
        default=0,
        metavar="N",
        help="asks: also N asks built from the catalog's genres and titles",
    )
    p.add_argument("--out", type=Path, default=Path("eval-out"), help="where metrics.json, report.md and plots go")
    p.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of users (quick runs)")
    p.add_argument(
        "--canaries",
        type=int,
        default=3,
        metavar="N",
        help="generation: plant N canaries ('My locker code is d d d d.') in one user's training reviews, train a "
        "small generator on the training split and report their exposure and cross-user leaks (default 3; 0: off)",
    )
    p.add_argument(
        "--canary-steps",
        type=int,
        default=400,
        metavar="S",
        help="generation: optimizer steps of that canary generator (the time bound; default 400)",
    )
    p.add_argument(
        "--canary-blurbs",
        type=int,
        default=200,
        metavar="B",
        help="generation: scan at most B of its blurbs for the other evaluated users for canaries (default 200)",
    )
    p.add_argument("--seed", type=int, default=0)

    p = command("forget", "forget a user: their interactions, reviews, feedback and review vectors")
    p.add_argument("--user", required=True, help="the user id to forget")

    p = command("chat", "serve the chat page")
    _chat_args(p)

    p = command("demo", "ingest the bundled demo catalog, make sure a generator exists, open the chat")
    p.add_argument("--user", action="append", help="demo user(s) to show first (default: u1 and u2)")
    p.add_argument("--no-chat", action="store_true", help="print recommendations and exit, without the chat page")
    _chat_args(p)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {
        "data_dir": args.data_dir,
        "chroma_host": args.chroma_host,
        "chroma_port": args.chroma_port,
        "encoder": args.encoder,
        "encoder_workers": getattr(args, "encoder_workers", None),
    }
    if args.config:
        return Settings.from_toml(args.config, **{k: v for k, v in values.items() if v is not None})
    return Settings.create(**values)


def _setup_logging(quiet: bool) -> None:
    # one handler on today's stderr: main() may run many times in one process (tests, hosts)
    for old in [h for h in logger.handlers if getattr(h, "name", None) == "recbot-cli"]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("recbot-cli")
    handler.setFormatter(logging.Formatter("recbot: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.INFO)
    logger.propagate = False
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _open(settings: Settings) -> Recommender:
    from recbot.recommender import Recommender

    return Recommender.open(settings=settings)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    if args.path is None and args.interactions is None:
        raise CatalogError("nothing to ingest: give a catalog PATH and/or --interactions FILE")
    report = _open(settings).ingest(
        args.path,
        fmt=args.format,
        interactions=args.interactions,
        strict=args.strict,
        holdout_last=args.holdout_last,
        tune=not args.no_tune,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0


def _print_recs(recs: Recommendations) -> None:
    from recbot.recommender import STRATEGY_TEXT

    print(
        f"Recommendations for {recs.user_id}"
        + (f" ({recs.query!r})" if recs.query else "")
        + f": {STRATEGY_TEXT[recs.strategy]}"
    )
    if recs.understood_text:
        print(f"Understood: {recs.understood_text}")
    if recs.relaxed:
        print(f"Note: {recs.relaxed}")
    for rec in recs:
        print(f"{rec.rank:>2}. {rec.item.title}  [{rec.item.category}]  score {rec.score:.3f}")
        if rec.because:
            print("    because you liked: " + "; ".join(r.describe() for r in rec.because))
        if rec.blurb:
            print(f"    {rec.blurb}" + ("  [template blurb]" if rec.blurb_source == "template" else ""))


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    recs = _open(settings.replace(hybrid=False) if args.content_only else settings).recommend(
        args.user, query=args.query, k=args.k, category=args.category, blurbs=not args.no_blurbs, surprise=args.surprise
    )
    if args.json:
        print(json.dumps(recs.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_recs(recs)
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    with _open(settings) as rec:
        report = rec.forget(args.user)
    if not any(report.deleted.values()):
        raise UnknownUserError(f"no rows of user {args.user!r} in {settings.data_dir}: nothing to forget")
    print("\n".join(report.lines()))
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    rec = _open(settings)
    print(rec.tune().describe())
    saved = rec.index.save_collab()  # as ingest does: the pool path's model, for serving to load
    if saved is not None:
        print(f"saved the pool path's collaborative model and neighbour lists: {saved}")
    return 0


def cmd_train_generator(args: argparse.Namespace, settings: Settings) -> int:
    from recbot.generation.train import TrainConfig

    config = TrainConfig(
        base=args.base,
        epochs=args.epochs,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        patience=args.patience,
        targets=args.targets,
        time_budget_s=args.time_budget,
        batch_size=args.batch_size,
        holdout_last=args.holdout_last,
        augment_per_item=args.augment,
        n_layer=args.layers,
        n_embd=args.width,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_max_grad_norm=args.dp_max_grad_norm,
    )
    if args.dp_epsilon is not None:
        require_extra("privacy", "recbot train-generator --dp-epsilon")  # before opening the index
    report = _open(settings).train_generator(config, out_dir=args.out)
    print("\n".join(report.lines()))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from recbot.eval.data import load_dataset
    from recbot.eval.runner import run_retrieval
    from recbot.recommender import make_embedder

    started = time.perf_counter()
    if args.what != "asks":
        require_extra("eval", f"recbot eval {args.what}")
    if args.what == "asks":
        return _eval_asks(args, settings)
    if args.dataset is None:
        raise ConfigError(f"eval {args.what} needs --dataset (movielens:DIR | amazon:FILE | recbot)")
    data = load_dataset(args.dataset, data_dir=settings.data_dir)
    if args.what == "generation":
        return _eval_generation(args, settings, data, started)
    result = run_retrieval(
        data,
        args.out,
        encoder=make_embedder(settings),
        seed=args.seed,
        max_users=args.max_users,
        settings=settings,  # the profile serving uses: reviews, recency, dislikes as configured
    )
    k = args.k or 10
    print(f"{args.dataset}: {result['protocol']['evaluated_users']} users, {result['protocol']['ranked_items']} items")
    metrics = ("hr", "ndcg", "mrr", "precision", "recall", "f1")
    print(f"{'method':<16} " + " ".join(f"{f'{m[:4]}@{k}':>9}" for m in metrics))
    nan = float("nan")
    for name, m in result["methods"].items():
        print(f"{name:<16} " + " ".join(f"{m.get(f'{metric}@{k}', nan):>9.4f}" for metric in metrics))
    print(f"hybrid weights: {result['hybrid_weights']}")
    print(f"wrote {args.out}/metrics.json, report.md, metrics_by_k.png in {time.perf_counter() - started:.0f}s")
    return 0


def _eval_asks(args: argparse.Namespace, settings: Settings) -> int:
    from recbot.eval.asks import BUNDLED_CASES, ask_report, markdown

    cases = args.cases or (None if args.generated else BUNDLED_CASES)
    with _open(settings) as rec:
        report = ask_report(rec, cases_file=cases, generated=args.generated, seed=args.seed, k=args.k or 5)
    text = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "asks.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (args.out / "asks.md").write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"wrote {args.out}/asks.json and asks.md")
    return 0


def _eval_generation(args: argparse.Namespace, settings: Settings, data: Any, started: float) -> int:
    import time

    import torch
    from accelerate import PartialState

    from recbot.eval.generation import run_generation
    from recbot.eval.privacy import CanaryPlan
    from recbot.generation.writer import GPT2Writer, read_card, resolve_generator
    from recbot.recommender import make_embedder

    if args.canaries < 0 or args.canary_steps < 1 or args.canary_blurbs < 0:
        raise ConfigError("--canaries and --canary-blurbs must be 0 or more, --canary-steps at least 1")
    settings = settings.replace(generator=args.generator or settings.generator)
    # under `accelerate launch --multi_gpu` or `torchrun`: one shard of the blurbs per process
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and args.canaries:
        raise ConfigError(
            "--canaries trains a generator in one process: add --canaries 0 under torchrun or accelerate launch "
            "(and measure the canaries in a one-process run)"
        )
    if state.num_processes > 1 and state.device.type != "cpu":
        settings = settings.replace(device=str(state.device))
    name = resolve_generator(settings)
    card = read_card(name) or None
    writer = GPT2Writer.load(name, settings)
    plan = (
        CanaryPlan(n=args.canaries, steps=args.canary_steps, blurbs=args.canary_blurbs, seed=args.seed)
        if args.canaries
        else None
    )
    result = run_generation(
        data,
        args.out,
        writer=writer,
        encoder=make_embedder(settings),
        seed=args.seed,
        max_users=args.max_users,
        generator_card=card,
        canaries=plan,
    )
    if result is None:
        return 0  # a helper process of `accelerate launch`; the main one reports
    cols = ["bleu1", "bleu4", "rouge1", "rouge2", "rougeL", "usr", "distinct2", "personalisation"]
    cols += ["unsupported_rate", "misquote_rate", "salad_rate", "fluency", "personal_rate"]
    print(f"{args.dataset}: {result['protocol']['users']} users; generator {name}")
    print(f"{'method':<15} " + " ".join(f"{c[:11]:>11}" for c in cols))
    for method, m in result["methods"].items():
        print(f"{method:<15} " + " ".join(f"{m[c]:>11.4f}" for c in cols))
    extra = {
        k: result["methods"]["recbot"].get(k)
        for k in ("grounding_rate", "hallucination_rate", "templated_rate", "perplexity", "unigram_perplexity")
    }
    print(f"recbot: {extra}")
    if privacy := result.get("privacy"):
        bits = ", ".join(f"{c['exposure_bits']:.2f}" for c in privacy["canaries"])
        g = privacy["generator"]
        print(
            f"privacy: canary exposure {bits} bits (mean {privacy['mean_exposure_bits']:.2f}; unplanted codes "
            f"{privacy['control_mean_exposure_bits']:.2f}; chance ~{privacy['chance_bits']:.1f}, full memorisation "
            f"{privacy['max_bits']:.1f}) in a generator trained "
            f"{g['steps']} steps on {len(privacy['canaries'])} canaries of user {privacy['owner']}; cross-user leaks "
            f"{privacy['leaks']} of {privacy['blurbs_for_other_users']} blurbs ({result['_privacy_seconds']:.0f}s)"
        )
    print(f"wrote {args.out}/metrics.json, report.md, blurb_lengths.png in {time.perf_counter() - started:.0f}s")
    return 0


def _auth(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """The logins of --auth and --auth-file; None for neither."""
    logins: list[tuple[str, str]] = []
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth takes USER:PASS")
        logins.append((user, password))
    if args.auth_file:
        logins += read_logins(args.auth_file)
    return logins or None


def read_logins(path: Path) -> list[tuple[str, str]]:
    """USER:PASS lines (blank lines and # comments skipped); a bad line names the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the login file ({exc.strerror or exc})") from exc
    logins: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigError(f"{path} line {n}: expected USER:PASS")
        if user.strip() in logins:
            raise ConfigError(f"{path} line {n}: user {user.strip()!r} is listed twice")
        logins[user.strip()] = password
    if not logins:
        raise ConfigError(f"{path}: no logins in the file")
    return list(logins.items())


EXTRAS = {
    "ui": ("gradio",),
    "agent": ("langchain_core", "pydantic"),
    "eval": ("matplotlib", "sacrebleu", "rouge_score", "sklearn"),
    "privacy": ("opacus",),
}


def require_extra(extra: str, what: str) -> None:
    """Raise ``MissingExtraError`` naming ``pip install 'recbot[extra]'`` when its modules are absent."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): pip install 'recbot[{extra}]'"
        )


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    require_extra("ui", "recbot chat")
    auth = _auth(args)
    return _serve(_open(settings), args, auth)


def _serve(rec: Recommender, args: argparse.Namespace, auth: list[tuple[str, str]] | None) -> int:
    from recbot.ui.app import LOCAL_HOSTS, check_exposure, launch, quiet_environment

    check_exposure(args.host, auth)  # before loading anything
    quiet_environment()
    if args.host not in LOCAL_HOSTS:
        print(f"Serving on {args.host}: reachable from other machines; {len(auth or ())} login(s).")
    rec.warm_up(blurbs=not args.no_blurbs)  # the index and models now, not on the first visitor's turn
    launch(rec, host=args.host, port=args.port, auth=auth, blurbs=not args.no_blurbs)
    return 0


def demo_files() -> tuple[Path, Path]:
    """The bundled demo catalog and interactions."""
    root = Path(str(resources.files("recbot") / "demo"))
    return root / "catalog.jsonl", root / "interactions.jsonl"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if not args.no_chat:
        require_extra("ui", "recbot demo (the chat page; --no-chat does without)")
    rec = _open(settings)
    catalog, interactions = demo_files()
    report = rec.ingest(catalog, interactions=interactions)
    print(report.lines()[0])
    if not rec.has_generator():
        from recbot.generation.train import DEMO_CONFIG

        print(
            f"No generator found: training a small GPT-2 on the demo catalog "
            f"({DEMO_CONFIG.max_steps} steps at most, about 3-4 minutes on 2 cores, once)..."
        )
        print("\n".join(rec.train_generator(DEMO_CONFIG).lines()))
    for user in args.user or ["u1", "u2"]:
        print()
        _print_recs(rec.recommend(user, k=5))
    if args.no_chat:
        print(f"\nTry: recbot --data-dir {settings.data_dir} recommend --user u3 --query 'a cosy mystery'")
        return 0
    print(f"\nOpening the chat on http://{args.host}:{args.port} (Ctrl+C to stop)")
    return _serve(rec, args, _auth(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recbot`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(bool(args.quiet))
    try:
        settings = _settings(args)
        handler = {
            "ingest": cmd_ingest,
            "recommend": cmd_recommend,
            "tune": cmd_tune,
            "train-generator": cmd_train_generator,
            "chat": cmd_chat,
            "eval": cmd_eval,
            "forget": cmd_forget,
            "demo": cmd_demo,
        }[args.command]
        return handler(args, settings)
    except CatalogError as exc:
        for row in exc.rejected:
            print(f"  rejected: {row}", file=sys.stderr)
        print(f"CatalogError: {exc}", file=sys.stderr)
        return 1
    except RecbotError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
