"""``llama-platform``: ingest a folder, run what is pending, see where things stand.

Everything here goes through the same Dagster instance as the UI (the one in
``DAGSTER_HOME``), so each command's runs and metadata are visible there too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

# The embedded default must be in place before Dagster reads its environment.
from llama_assets.base.settings import SAMPLE_DATA, ensure_dagster_home

SAMPLE_SOURCE = "python-docs"


def _instance():
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def _runner(echo=print):
    from llama_assets.definitions import resources_for
    from llama_assets.runner import Runner

    return Runner(_instance(), resources_for(), echo, live=sys.stdout.isatty())


def _train_config(args) -> dict | None:
    config = {
        k: v
        for k, v in {"max_steps": args.max_steps, "max_tokens": args.max_tokens}.items()
        if v is not None
    }
    return config or None


def cmd_ingest(args) -> int:
    from llama_assets.base.settings import data_root
    from llama_assets.ingest.landing import add_to_landing

    key = add_to_landing(Path(args.path), data_root() / "landing", args.source, args.batch)
    print(f"added batch {key} to {data_root() / 'landing' / key}")
    print("run `llama-platform run` to process it (or let the landing-zone sensor do it)")
    return 0


def cmd_run(args) -> int:
    runner = _runner()
    started = time.perf_counter()
    ran = runner.run_pending(args.variant, _train_config(args))
    print(f"done in {time.perf_counter() - started:.1f}s" if ran else "nothing pending")
    return 0


def cmd_backfill(args) -> int:
    from llama_assets.partitions import BATCHES

    runner = _runner()
    runner.register_landing_batches()
    keys = list(runner.instance.get_dynamic_partitions(BATCHES))
    if args.partitions:
        wanted = [k.strip() for k in args.partitions.split(",") if k.strip()]
        unknown = sorted(set(wanted) - set(keys))
        if unknown:
            print(f"unknown batch partitions: {', '.join(unknown)}", file=sys.stderr)
            return 2
        selected = [k for k in keys if k in wanted]
    elif args.start or args.end:
        lo = keys.index(args.start) if args.start else 0
        hi = keys.index(args.end) + 1 if args.end else len(keys)
        selected = keys[lo:hi]
    else:
        selected = keys
    runner.run_batches(selected)
    print(f"re-materialised {len(selected)} batch partition(s)")
    return 0


def cmd_status(args) -> int:
    from llama_assets.base.settings import dagster_home, data_root
    from llama_assets.deployment.registry import read_aliases
    from llama_assets.jobs import BATCH_ASSETS, VARIANT_ASSETS
    from llama_assets.partitions import BATCHES
    from llama_assets.training.variants import VARIANTS

    runner = _runner()
    layout = runner.resources["storage"].layout
    print(f"data root    {data_root()}")
    print(f"DAGSTER_HOME {dagster_home()}")
    keys = list(runner.instance.get_dynamic_partitions(BATCHES))
    from llama_assets.ingest.landing import landing_batch_keys

    waiting = [k for k in landing_batch_keys(layout.landing) if k not in keys]
    print(f"\nbatches: {len(keys)} registered, {len(waiting)} waiting in the landing zone")
    done = {a.key.to_user_string(): runner.materialized(a) for a in BATCH_ASSETS}
    for key in keys:
        complete = sum(key in parts for parts in done.values())
        print(f"  {key:<40} {complete}/{len(BATCH_ASSETS)} assets materialised")
    for key in waiting:
        print(f"  {key:<40} waiting")
    print("\nmodels:")
    for variant in VARIANTS:
        aliases = read_aliases(layout.aliases(variant))
        states = [variant in runner.materialized(a) for a in VARIANT_ASSETS]
        line = f"  {variant:<14} champion={aliases['champion'] or '-'}"
        if aliases["champion"]:
            report = layout.reports(variant, aliases["champion"]) / "report.json"
            if report.exists():
                r = json.loads(report.read_text())
                line += (
                    f" ppl {r['quality']['base_perplexity']:.1f}->"
                    f"{r['quality']['finetuned_perplexity']:.1f}"
                )
        print(f"{line}  ({sum(states)}/{len(states)} assets materialised)")
    return 0


def cmd_rollback(args) -> int:
    from llama_assets.base.layout import DataLayout
    from llama_assets.base.settings import data_root
    from llama_assets.deployment.registry import RollbackError, rollback

    path = DataLayout(data_root()).aliases(args.variant)
    try:
        aliases = rollback(path, reason=args.reason)
    except RollbackError as error:
        print(f"rollback refused: {error}", file=sys.stderr)
        return 1
    print(f"{args.variant}: champion is now {aliases['champion']}")
    return 0


def _chunks_table():
    from llama_assets.definitions import resources_for
    from llama_assets.retrieval.index import TABLE_NAME

    resources = resources_for()
    db = resources["vector_store"].connect()
    if TABLE_NAME not in db.table_names():
        raise FileNotFoundError(
            f"no table {TABLE_NAME!r} in {resources['vector_store'].resolved_uri}: "
            "run `llama-platform run` first"
        )
    return db.open_table(TABLE_NAME), resources


def cmd_search(args) -> int:
    from llama_assets.retrieval.search import format_hits, search

    table, resources = _chunks_table()
    hits = search(table, resources["embedder"].encode, [args.query], args.k, args.mode)[0]
    print(f"{len(hits)} hit(s), {args.mode} search, table version {table.version}")
    print(format_hits(hits) if hits else "no hits")
    return 0


def cmd_remove_batch(args) -> int:
    """Delete a batch everywhere: partition, index rows, landing and derived files."""
    import shutil

    from llama_assets.base.layout import split_batch_key
    from llama_assets.partitions import BATCHES
    from llama_assets.retrieval.index import TABLE_NAME, delete_batch, maintain_indexes

    instance = _instance()
    from llama_assets.definitions import resources_for

    resources = resources_for()
    layout = resources["storage"].layout
    source, batch = split_batch_key(args.key)
    registered = args.key in instance.get_dynamic_partitions(BATCHES)
    db = resources["vector_store"].connect()
    rows = 0
    if TABLE_NAME in db.table_names():
        table = db.open_table(TABLE_NAME)
        rows = delete_batch(table, source, batch)
        maintain_indexes(table)
    # The landing folder goes too, or the landing-zone sensor would register it again.
    paths = [
        layout.landing_batch(args.key),
        layout.shards(args.key),
        layout.quarantine(args.key),
        layout.profile(args.key),
        layout.embedding_summary(args.key),
        layout.embedding_summary(args.key).with_suffix(".json"),
        layout.review_queue(args.key),
        *sorted((layout.root / "staging").glob(f"*/{source}/{batch}")),
    ]
    removed = []
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists():
            path.unlink()
            removed.append(path)
    if registered:
        instance.delete_dynamic_partition(BATCHES, args.key)
    if not (registered or rows or removed):
        print(f"no batch {args.key}", file=sys.stderr)
        return 2
    state = "deleted" if registered else "was not registered"
    print(f"removed batch {args.key}: partition {state}, {rows} index row(s), {len(removed)} paths")
    for path in removed:
        print(f"  {path}")
    return 0


def cmd_restore_index(args) -> int:
    from llama_assets.retrieval.index import list_versions, restore_version

    table, _ = _chunks_table()
    if args.version is None:
        print(f"table chunks, current version {table.version}")
        for v in list_versions(table):
            print(f"  {v['version']:>6}  {v['timestamp']}")
        return 0
    version = restore_version(table, args.version)
    print(f"restored version {args.version} as version {version} ({table.count_rows()} rows)")
    return 0


def cmd_demo(args) -> int:
    from llama_assets.base.settings import data_root
    from llama_assets.ingest.landing import add_to_landing

    landing = data_root() / "landing"
    for part in sorted(p.name for p in SAMPLE_DATA.iterdir() if p.is_dir()):
        if not (landing / SAMPLE_SOURCE / part).exists():
            key = add_to_landing(SAMPLE_DATA / part, landing, SAMPLE_SOURCE, part)
            print(f"landed sample batch {key}")
    started = time.perf_counter()
    _runner().run_pending(args.variant, _train_config(args))
    print(f"\ngraph materialised in {time.perf_counter() - started:.1f}s\n")
    print_summary(args.variant)
    return 0


def print_summary(variants) -> None:
    from llama_assets.base.layout import DataLayout
    from llama_assets.base.settings import dagster_home, data_root
    from llama_assets.deployment.registry import read_aliases

    layout = DataLayout(data_root())
    print("artifacts")
    rows = [
        ("landing zone", layout.landing),
        ("quarantine", layout.root / "quarantine"),
        ("clean shards", layout.shards_root),
        ("LanceDB (table chunks)", layout.lancedb),
        ("training dataset", layout.training_dataset),
        ("models", layout.root / "models"),
        ("eval reports", layout.root / "reports"),
        ("Dagster instance", dagster_home()),
    ]
    for name, path in rows:
        print(f"  {name:<24} {path}")
    quarantined = sum(
        sum(1 for _ in f.open()) for f in (layout.root / "quarantine").rglob("*.jsonl")
    )
    print(f"  ({quarantined} records quarantined, each with its reason)")
    for variant in variants:
        aliases = read_aliases(layout.aliases(variant))
        latest = layout.models(variant) / "latest.json"
        if not latest.exists():
            continue
        version = json.loads(latest.read_text())["version"]
        report = json.loads((layout.reports(variant, version) / "report.json").read_text())
        q, r, s = report["quality"], report["retrieval"], report["serving"]
        k = r["k"]
        print(
            f"\neval report {variant}/{version}: {layout.reports(variant, version) / 'report.md'}"
        )
        print(
            f"  held-out perplexity  base {q['base_perplexity']:.2f} -> fine-tuned "
            f"{q['finetuned_perplexity']:.2f} ({q['improvement']:.1%} better)"
        )
        print(
            f"  retrieval            recall@{k} {r[f'recall@{k}']:.3f}, MRR@{k} "
            f"{r[f'mrr@{k}']:.3f} over {r['queries']} known-item queries"
        )
        print(
            f"  serving              {s['tokens_per_second']:.1f} tokens/s, first token "
            f"{s['first_token_ms']:.1f} ms"
        )
        print(f"  champion             {aliases['champion'] or 'none (gate not passed)'}")
    print("\nsee it all in the UI: make ui  (http://127.0.0.1:3000)")


def build_parser() -> argparse.ArgumentParser:
    from llama_assets.training.variants import VARIANTS

    parser = argparse.ArgumentParser(prog="llama-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add a file or folder to the landing zone as a new batch")
    p.add_argument("path")
    p.add_argument("--source", required=True, help="source name (one path segment)")
    p.add_argument("--batch", help="batch name (default: a UTC timestamp)")
    p.set_defaults(func=cmd_ingest)

    def training_options(p):
        p.add_argument(
            "--variant",
            action="append",
            choices=sorted(VARIANTS),
            help="model variant(s) to train and evaluate (default: tiny)",
        )
        p.add_argument("--max-steps", type=int, help="override the variant's step budget")
        p.add_argument("--max-tokens", type=int, help="override the variant's token budget")

    p = sub.add_parser("run", help="materialise everything pending, in-process")
    training_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="land the bundled sample corpus and run the whole graph")
    training_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="batches, models and champions")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("backfill", help="re-materialise batch partitions (idempotent)")
    p.add_argument("--partitions", help="comma-separated keys <source>/<batch>")
    p.add_argument("--from", dest="start", help="first key of a range (registration order)")
    p.add_argument("--to", dest="end", help="last key of a range (inclusive)")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("search", help="search the RAG index; prints hits with source and score")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    p.add_argument("--mode", choices=["vector", "fts", "hybrid"], default="hybrid")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "remove-batch",
        help="delete a batch: its partition, index rows, landing folder and derived files",
    )
    p.add_argument("key", help="<source>/<batch>")
    p.set_defaults(func=cmd_remove_batch)

    p = sub.add_parser(
        "restore-index", help="list the versions of the chunks table, or restore one"
    )
    p.add_argument("--version", type=int, help="the version to make current again")
    p.set_defaults(func=cmd_restore_index)

    p = sub.add_parser("rollback", help="move a variant's champion alias back one promotion")
    p.add_argument("--variant", default="tiny", choices=sorted(VARIANTS))
    p.add_argument("--reason", default="manual rollback")
    p.set_defaults(func=cmd_rollback)
    return parser


def quiet_libraries() -> None:
    """Keep the terminal for our progress lines: no download bars, no
    deprecation chatter from inside transformers and peft."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("LANCEDB_LOG", "error")  # no per-query deprecation lines
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = build_parser().parse_args(argv)
    if getattr(args, "variant", None) is None and "variant" in vars(args):
        args.variant = ["tiny"]
    from llama_assets.runner import StepFailed

    try:
        return args.func(args)
    except StepFailed as error:
        print(f"\nfailed: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
