"""``llama-platform``: ingest a folder, run what is pending, see where things stand.

Everything here goes through the same Dagster instance as the UI (the one in
``DAGSTER_HOME``), so each command's runs and metadata are visible there too.
Commands parse, call a library function and print; the decisions live in the
library (`runner`, `staleness`, `status`, `batch_removal`, `retrieval.index`,
`deployment.registry`). Commands that delete or replace data show what they
will change and ask first (``--yes`` for scripts, ``--dry-run`` to only look),
as ``dagster asset wipe`` does.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click

# The embedded default must be in place before Dagster reads its environment.
from llama_assets.base.settings import PROJECT_ROOT, SAMPLE_DATA, dagster_home, data_root
from llama_assets.base.store import StorageUnavailable

SAMPLE_SOURCE = "python-docs"
DEFAULT_VARIANTS = ("tiny",)


class ExpectedStop(click.ClickException):
    """An expected stop (bad input, a failed step): a sentence, no stack trace."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _instance():
    from llama_assets.instance import open_instance

    return open_instance()


def _resources() -> dict:
    from resources.environments import resources_for

    return resources_for()


def _runner():
    from llama_assets.runner import Runner

    return Runner(_instance(), _resources(), click.echo, live=sys.stdout.isatty())


def _variant_names() -> list[str]:
    from llama_assets.training.variants import VARIANTS

    return sorted(VARIANTS)


def _train_config(max_steps: int | None, max_tokens: int | None) -> dict | None:
    config = {
        k: v for k, v in {"max_steps": max_steps, "max_tokens": max_tokens}.items() if v is not None
    }
    return config or None


def _confirm(changes: list[str], yes: bool, dry_run: bool) -> bool:
    """Show `changes`; True when they should be made now."""
    for line in changes:
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing changed")
        return False
    if yes:
        return True
    if not click.confirm("Make these changes?", default=False):
        click.echo("nothing changed (pass --yes to skip this question)")
        return False
    return True


def training_options(command):
    """--variant, --max-steps, --max-tokens: which variants to bring up to date, and
    the training budget overrides."""
    command = click.option("--max-tokens", type=int, help="override the variant's token budget")(
        command
    )
    command = click.option("--max-steps", type=int, help="override the variant's step budget")(
        command
    )
    return click.option(
        "--variant",
        "variants",
        multiple=True,
        type=click.Choice(_variant_names()),
        help="model variant(s) to train and evaluate (default: tiny)",
    )(command)


@click.group(
    help="The llama platform: ingest landing batches, materialise what is pending, and see "
    "where things stand, on the same Dagster instance as the UI (DAGSTER_HOME) and the same "
    "data root (LLAMA_DATA_ROOT).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    quiet_libraries()


@cli.command(help="Add a file or folder to the landing zone as a new batch.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="source name (one path segment)")
@click.option("--batch", help="batch name (default: a UTC timestamp)")
def ingest(path: Path, source: str, batch: str | None) -> None:
    from llama_assets.ingest.landing import add_to_landing

    landing = _resources()["storage"].layout.landing
    key = add_to_landing(path, landing, source, batch)
    click.echo(f"added batch {key} to {landing / key}")
    click.echo("run `llama-platform run` to process it (or let the landing-zone sensor do it)")


@cli.command(help="Materialise everything pending (stale), in-process.")
@training_options
@click.option("--dry-run", is_flag=True, help="list what would run, and why, without running it")
def run(variants, max_steps, max_tokens, dry_run: bool) -> None:
    runner = _runner()
    variants = variants or DEFAULT_VARIANTS
    if dry_run:
        _show_plan(runner, variants)
        return
    started = time.perf_counter()
    outcome = runner.run_pending(variants, _train_config(max_steps, max_tokens))
    if not outcome.ran and not outcome.stops:
        click.echo("nothing pending")
        return
    click.echo(f"done in {time.perf_counter() - started:.1f}s")
    _report_stops(outcome)


def _report_stops(outcome) -> None:
    """Each run that stopped, as a sentence, at the end; exit 1 when any did."""
    if not outcome.stops:
        return
    click.echo(f"\n{len(outcome.stops)} run(s) stopped; everything else ran:", err=True)
    for stop in outcome.stops:
        click.echo(f"  - {stop.run.title}: {stop.reason}", err=True)
    raise click.exceptions.Exit(1)


def _show_plan(runner, variants) -> None:
    new = runner.register_landing_batches()
    if new:
        click.echo(f"registered {len(new)} new batch(es): {', '.join(new)}")
    staleness = runner.staleness()
    plan = runner.plan(variants)
    if not plan:
        click.echo("nothing pending")
    for planned in plan:
        click.echo(planned.title)
        for asset in planned.assets:
            reason = staleness.plan[(asset, planned.partition)]
            click.echo(f"  {asset.to_user_string():<22} {reason}")


@cli.command(help="Land the bundled sample corpus (once) and run the whole graph.")
@training_options
def demo(variants, max_steps, max_tokens) -> None:
    from llama_assets.ingest.landing import add_to_landing

    variants = variants or DEFAULT_VARIANTS
    landing = _resources()["storage"].layout.landing
    for part in sorted(p.name for p in SAMPLE_DATA.iterdir() if p.is_dir()):
        if not (landing / SAMPLE_SOURCE / part).exists():
            key = add_to_landing(SAMPLE_DATA / part, landing, SAMPLE_SOURCE, part)
            click.echo(f"landed sample batch {key}")
    started = time.perf_counter()
    outcome = _runner().run_pending(variants, _train_config(max_steps, max_tokens))
    click.echo(f"\ngraph materialised in {time.perf_counter() - started:.1f}s\n")
    print_summary(variants)
    _report_stops(outcome)


@cli.command(help="Batches, models and champions, and what is stale.")
def status() -> None:
    from llama_assets.status import platform_status

    resources = _resources()
    state = platform_status(_instance(), resources["storage"].layout)
    click.echo(f"data root    {data_root()}")
    click.echo(f"DAGSTER_HOME {dagster_home()}")
    click.echo(
        f"\nbatches: {len(state.batches)} registered, "
        f"{len(state.waiting)} waiting in the landing zone"
    )
    for batch in state.batches:
        click.echo(
            f"  {batch.key:<40} {batch.materialized}/{batch.total} assets materialised"
            + _stale_note(batch.stale)
        )
    for key in state.waiting:
        click.echo(f"  {key:<40} waiting")
    click.echo("\nmodels:")
    for variant in state.variants:
        line = f"  {variant.key:<14} champion={variant.champion or '-'}"
        if variant.report:
            quality = variant.report["quality"]
            line += f" ppl {quality['base_perplexity']:.1f}->{quality['finetuned_perplexity']:.1f}"
            if "finetuned_bits_per_byte" in quality:
                line += f" bpb {quality['finetuned_bits_per_byte']:.3f}"
        click.echo(
            f"{line}  ({variant.materialized}/{variant.total} assets materialised)"
            + _stale_note(variant.stale if variant.materialized else {})
        )


def _stale_note(stale: dict[str, str]) -> str:
    if not stale:
        return ""
    first, reason = next(iter(stale.items()))
    return f", {len(stale)} stale ({first}: {reason})"


@cli.command(help="Re-materialise batch partitions (all when none are given); idempotent.")
@click.option("--partitions", help="comma-separated keys <source>/<batch>")
@click.option("--from", "start", help="first key of a range (registration order)")
@click.option("--to", "end", help="last key of a range (inclusive)")
def backfill(partitions: str | None, start: str | None, end: str | None) -> None:
    from llama_assets.partitions import BATCHES, select_batch_keys

    runner = _runner()
    runner.register_landing_batches()
    keys = list(runner.instance.get_dynamic_partitions(BATCHES))
    wanted = [k.strip() for k in partitions.split(",") if k.strip()] if partitions else None
    selected = select_batch_keys(keys, wanted, start, end)
    outcome = runner.run_batches(selected)
    click.echo(f"re-materialised {len(outcome.ran)} of {len(selected)} batch partition(s)")
    _report_stops(outcome)


@cli.command(
    help="Move a variant's champion alias back one promotion and serve the champion it "
    "moves back to (a rollout in progress is aborted)."
)
@click.option("--variant", default="tiny", type=click.Choice(_variant_names()))
@click.option("--reason", default="manual rollback")
def rollback(variant: str, reason: str) -> None:
    from llama_assets.deployment.registry import read_aliases

    _rollout(variant, action="rollback", reason=reason)
    aliases = read_aliases(_resources()["storage"].layout.aliases(variant))
    click.echo(f"{variant}: champion is now {aliases['champion']}")


def _chunks_table(replica: bool = False):
    """The chunks table; `replica`: for queries, a local copy of its current
    version when the index is on S3 (the table itself when it is local)."""
    from llama_assets.retrieval.index import TABLE_NAME, existing_table

    resources = _resources()
    store = resources["vector_store"]
    table = existing_table(store.read_replica() if replica else store.connect())
    if table is None:
        raise ExpectedStop(
            f"no table {TABLE_NAME!r} in {resources['vector_store'].resolved_uri}: "
            "run `llama-platform run` first"
        )
    return table, resources


@cli.command(help="Search the RAG index; prints hits with source and score.")
@click.argument("query")
@click.option("-k", type=click.IntRange(min=1), default=5, help="number of hits (default 5)")
@click.option("--mode", type=click.Choice(["vector", "fts", "hybrid"]), default="hybrid")
def search(query: str, k: int, mode: str) -> None:
    from llama_assets.retrieval.index_files import verify_checksums
    from llama_assets.retrieval.search import format_hits
    from llama_assets.retrieval.search import search as run_search

    table, resources = _chunks_table(replica=True)
    location = resources["vector_store"].location
    uri = str(location)
    # A missing or cut fragment can read back as fewer hits without an error.
    problems = verify_checksums(location, hashes=False)
    try:
        if problems:
            raise RuntimeError("; ".join(problems[:3]))
        hits = run_search(table, resources["embedder"].encode, [query], k, mode)[0]
    except (OSError, RuntimeError) as error:  # Lance reports a damaged file as RuntimeError
        raise ExpectedStop(
            f"the chunks table in {uri} cannot be read ({str(error).splitlines()[0][:200]}): "
            "the next rag_index run rebuilds it from the embeddings (`llama-platform "
            "backfill --partitions <any batch>`), or make an intact version current with "
            "`llama-platform restore-index --version N`",
            exit_code=1,
        ) from error
    click.echo(f"{len(hits)} hit(s), {mode} search, table version {table.version}")
    click.echo(format_hits(hits) if hits else "no hits")


@cli.command(
    "remove-batch",
    help="Delete a batch everywhere: its partition, index rows, landing folder and "
    "derived files. Shows the plan and asks first.",
)
@click.argument("key")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
def remove_batch(key: str, yes: bool, dry_run: bool) -> None:
    from llama_assets.batch_removal import apply_removal, plan_removal

    resources = _resources()
    instance = _instance()
    db = resources["vector_store"].connect()
    storage = resources["storage"]
    # The local SQLite index only when there is one; a shared (Postgres) one always.
    local_index = storage.layout.dedup_index
    dedup = (
        None if local_index.local and not local_index.is_file() else storage.dedup_index(instance)
    )
    removal = plan_removal(instance, storage.layout, db, key, dedup)
    if removal.empty:
        raise ExpectedStop(f"no batch {key}")
    if not _confirm([f"remove batch {key}:", *removal.describe()], yes, dry_run):
        return
    rows = apply_removal(instance, db, removal, resources["storage"].layout, resources)
    state = "deleted" if removal.registered else "was not registered"
    click.echo(
        f"removed batch {key}: partition {state}, {rows} index row(s), {len(removal.paths)} paths"
    )


@cli.command(
    "restore-index",
    help="List the versions of the chunks table, or make version N current again "
    "(as a new version, so it can be undone). Shows the change and asks first.",
)
@click.option("--version", type=int, help="the version to make current again")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
def restore_index(version: int | None, yes: bool, dry_run: bool) -> None:
    from llama_assets.retrieval.index import list_versions, restore_version, rows_at_version

    table, _ = _chunks_table()
    if version is None:
        click.echo(f"table chunks, current version {table.version}")
        for v in list_versions(table):
            click.echo(f"  {v['version']:>6}  {v['timestamp']}")
        return
    known = [v["version"] for v in list_versions(table)]
    if version not in known:
        raise ExpectedStop(f"the chunks table has no version {version} (versions: {known})")
    change = (
        f"chunks table: version {table.version} ({table.count_rows()} rows) -> "
        f"a new version {table.version + 1} with the rows of version {version} "
        f"({rows_at_version(table, version)} rows)"
    )
    if not _confirm([change], yes, dry_run):
        return
    new = restore_version(table, version)
    click.echo(f"restored version {version} as version {new} ({table.count_rows()} rows)")


@cli.command(
    help="Serve a variant's champion behind the OpenAI-compatible gateway (and the canary "
    "while a rollout runs); ready when GET /health/ready answers 200."
)
@click.option("--variant", default="tiny", type=click.Choice(_variant_names()))
@click.option("--host", default="127.0.0.1", help="bind address (others need --keys)")
@click.option("--port", type=int, default=8000)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="API keys file (JSON of names and sha256 hashes; see the README)",
)
@click.option(
    "--price-per-hour",
    type=float,
    default=lambda: float(os.environ.get("LLAMA_DEVICE_PRICE_PER_HOUR", "0")),
    help="a backend device's price per hour, for the cost SLI (LLAMA_DEVICE_PRICE_PER_HOUR)",
)
@click.option("--device", default="cpu", help="torch device of the CPU engine's backends")
@click.option(
    "--engine",
    type=click.Choice(["auto", "vllm", "cpu"]),
    default=lambda: os.environ.get("LLAMA_SERVING_ENGINE", "auto"),
    help="vllm (its own environment: LLAMA_VLLM_PYTHON or .venv-vllm), the CPU backend, or "
    "auto: vllm where a GPU and a vLLM environment are there (LLAMA_SERVING_ENGINE)",
)
def serve(
    variant: str,
    host: str,
    port: int,
    keys_file: Path | None,
    price_per_hour: float,
    device: str,
    engine: str,
) -> None:
    from llama_assets.base.layout import DataLayout
    from llama_assets.deployment.registry import read_aliases
    from llama_assets.serving.access import AccessError
    from llama_assets.serving.serve import NothingToServe, gateway_config, run_gateway
    from llama_assets.serving.vllm import VllmUnavailable

    # No Dagster in the serving process (4 s of imports, and a gateway outlives any
    # run): S3 through the store's own client, built as dagster-aws's S3Resource does.
    layout = DataLayout(data_root())
    champion = read_aliases(layout.aliases(variant))["champion"]
    try:
        config = gateway_config(layout, variant, champion, host, keys_file, price_per_hour)
        run_gateway(config, layout, host, port, device=device, echo=click.echo, engine=engine)
    except (AccessError, NothingToServe, VllmUnavailable) as error:
        raise ExpectedStop(str(error)) from error


@cli.command(
    help="Open the Dagster UI on this instance: `dagster dev` (webserver and daemon, so "
    "sensors and schedules run) on 127.0.0.1:3000. The UI has no login: another host "
    "needs --behind-authenticating-proxy."
)
@click.option("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
@click.option("--port", type=int, default=3000)
@click.option(
    "--behind-authenticating-proxy",
    "behind_proxy",
    is_flag=True,
    help="allow a non-loopback --host: a proxy in front authenticates every request",
)
def ui(host: str, port: int, behind_proxy: bool) -> None:
    from llama_assets.serving.access import AccessError, check_unauthenticated_bind

    try:
        check_unauthenticated_bind(host, "the Dagster UI", behind_proxy)
    except AccessError as error:
        raise ExpectedStop(str(error), exit_code=1) from error
    _instance()  # created (schema and all) before dagster dev's processes open it
    dagster = Path(sys.executable).parent / "dagster"
    click.echo(f"Dagster UI on http://{host}:{port} (instance: {dagster_home()})")
    os.chdir(PROJECT_ROOT)  # the workspace's code location is found from the checkout
    os.execv(dagster, [str(dagster), "dev", "-h", host, "-p", str(port), "-w", "workspace.yaml"])


@cli.group(
    help="Roll a version out behind the gateway, or back: canary stages judged by the canary "
    "sensor, blue-green switches; each move is a run of serving_deployment."
)
def rollout() -> None:
    pass


def _rollout(variant: str, **command) -> None:
    from llama_assets.deployment.rollout import RolloutRefused
    from llama_assets.deployment.rollout_assets import run_rollout_command
    from llama_assets.jobs import QUIET_RUN_CONFIG

    try:
        state = run_rollout_command(
            _instance(), _resources(), variant, loggers=QUIET_RUN_CONFIG["loggers"], **command
        )
    except RolloutRefused as error:
        raise ExpectedStop(f"rollout {command['action']} refused: {error}", exit_code=1) from error
    _print_route(state)


def _print_route(state) -> None:
    canary = (
        f", {'preview' if state.strategy == 'blue_green' else 'canary'} {state.canary} at "
        f"{state.canary_weight:g}%"
        if state.canary
        else ""
    )
    click.echo(f"{state.variant}: stable {state.stable}{canary} ({state.status}, revision "
               f"{state.revision})")  # fmt: skip
    for move in list(state.history)[-10:]:
        click.echo(f"  {move['at']}  {move['action']:<11} {move.get('version') or '':<13} "
                   f"{move['canary_weight']:>5g}%  {move['reason']}")  # fmt: skip


variant_option = click.option("--variant", default="tiny", type=click.Choice(_variant_names()))
reason_option = click.option("--reason", default="", help="why (kept in the history)")


@rollout.command("status", help="The routing state and its last moves.")
@variant_option
def rollout_status(variant: str) -> None:
    from llama_assets.serving.routing import read_state

    _print_route(read_state(_resources()["storage"].layout.deployment(variant), variant))


def _rollout_command(name: str, action: str, help_text: str, version: bool = False):
    def command(variant: str, reason: str, version: str | None = None) -> None:
        _rollout(variant, action=action, reason=reason or f"{name} from the CLI",
                 version=version or "")  # fmt: skip

    command = reason_option(variant_option(command))
    if version:
        command = click.option(
            "--version", "version", help="the version (default: the release candidate)"
        )(command)
    return rollout.command(name, help=help_text)(command)


_rollout_command("canary", "canary", "Start a canary of a version (1%, then the sensor).", True)
_rollout_command("blue-green", "blue_green", "Stage a version at 0% for a blue-green switch.", True)
_rollout_command("switch", "switch", "Blue-green: pre-switch analysis, then all traffic at once.")
_rollout_command("switch-back", "switch_back", "Blue-green: all traffic back at once.")
_rollout_command("abort", "abort", "Roll the canary back to 0% (diagnostics saved first).")
_rollout_command("pause", "pause", "Hold the canary at its weight.")
_rollout_command("resume", "resume", "Continue a paused rollout.")
_rollout_command("promote", "promote", "Make the canary stable now and move the champion alias.")


def print_summary(variants) -> None:
    from llama_assets.status import demo_summary

    summary = demo_summary(_resources()["storage"].layout, dagster_home(), variants)
    click.echo("artifacts")
    for name, path in summary.artifacts:
        click.echo(f"  {name:<24} {path}")
    click.echo(f"  ({summary.quarantined} records quarantined, each with its reason)")
    for figures in summary.reports:
        report = figures.report
        q, r = report["quality"], report["retrieval"]
        k = r["k"]
        click.echo(
            f"\neval report {figures.variant}/{figures.version}: {figures.path / 'report.md'}"
        )
        click.echo(
            f"  held-out bits/byte   base {q['base_bits_per_byte']:.3f} -> fine-tuned "
            f"{q['finetuned_bits_per_byte']:.3f} ({q['improvement']:.1%} better; perplexity "
            f"{q['base_perplexity']:.1f} -> {q['finetuned_perplexity']:.1f})"
        )
        click.echo(
            f"  retrieval            recall@{k} {r[f'recall@{k}']:.3f}, MRR@{k} "
            f"{r[f'mrr@{k}']:.3f} over {r['queries']} known-item queries"
        )
        for line in _report_lines(report):
            click.echo(line)
        click.echo(f"  champion             {figures.champion or 'none (gate not passed)'}")
    click.echo("\nsee it all in the UI: make ui  (http://127.0.0.1:3000)")


def _report_lines(report: dict) -> list[str]:
    """The eval sections beyond perplexity and retrieval (reports since issue 11)."""
    lines = []
    if "lm_eval" in report:
        for task, scores in report["lm_eval"]["tasks"].items():
            tuned, base = scores["finetuned"], scores["base"]
            metric = "acc" if "acc" in tuned else "bits_per_byte"
            lines.append(
                f"  lm-eval {task:<12} {metric} base {base.get(metric, float('nan')):.3f} "
                f"-> fine-tuned {tuned.get(metric, float('nan')):.3f}"
            )
    if "rag" in report:
        rag = report["rag"]
        lines.append(
            f"  RAG                  EM {rag['exact_match']:.3f}, F1 {rag['f1']:.3f}, grounded "
            f"{rag['groundedness']:.3f}, hit {rag['retrieval_hit']:.3f}, hallucinated "
            f"{rag['hallucination_rate']:.3f} ({rag['questions']} questions)"
        )
    if "safety" in report:
        rate = report["safety"]["violation_rate"]
        lines.append(f"  safety               red-team violation rate {rate:.3f}")
    if "memorisation" in report:
        m = report["memorisation"]
        lines.append(
            f"  memorisation         extraction {m['extraction_rate']:.3f}, outputs with PII "
            f"{m['pii']['pii_rate']:.3f}"
        )
    s = report["serving"]
    if "ttft_ms_p50" in s:
        lines.append(
            f"  serving              load {s['load_to_first_token_s']:.1f} s, TTFT p50/p95 "
            f"{s['ttft_ms_p50']:.0f}/{s['ttft_ms_p95']:.0f} ms, {s['tokens_per_second']:.1f} "
            f"tokens/s, ${s['cost_per_1k_tokens_usd']:.5f}/1k tokens"
        )
    else:
        lines.append(f"  serving              {s['tokens_per_second']:.1f} tokens/s")
    if "gate" in report:
        gate = report["gate"]
        lines.append(
            "  gate                 "
            + ("passed" if gate["passed"] else f"FAILED: {', '.join(gate['failed'])}")
        )
    return lines


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
    """The console script: expected stops print a sentence and exit non-zero
    (1: a step or a refusal, 2: bad input)."""
    try:
        code = cli.main(args=argv, prog_name="llama-platform", standalone_mode=False)
    except click.exceptions.Abort as abort:
        if isinstance(abort.__cause__, KeyboardInterrupt):  # click wraps Ctrl-C and SIGTERM
            click.echo("\nstopped by a signal", err=True)
            return 130
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except StorageUnavailable as error:
        # The object store of an s3:// data root did not answer: its sentence says
        # which endpoint and what to check.
        click.echo(f"error: {error}", err=True)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        return 2
    except KeyboardInterrupt:
        # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        click.echo("\nstopped by a signal", err=True)
        return 130
    except Exception as error:
        # The runner's errors, imported only by the commands that run assets
        # (`serve` starts without Dagster and torch).
        runner = sys.modules.get("llama_assets.runner")
        if runner is not None and isinstance(error, runner.StepFailed):
            click.echo(f"\nfailed: {error}", err=True)
            return 1
        interrupts = sys.modules.get("llama_assets.interrupts")
        if interrupts is not None and isinstance(error, interrupts.Interrupted):
            click.echo(f"\n{error}", err=True)
            return 130
        raise
    # A command that ends with click's Exit (runs that stopped) returns its code.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
