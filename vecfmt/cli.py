"""The ``vecfmt`` command: a thin face over the library API (every command is a function in
``vecfmt.transfer`` or ``vecfmt.ops``). Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vecfmt import __version__
from vecfmt.errors import InvalidDataError, VecfmtError
from vecfmt.manifest import EmbeddingModel
from vecfmt.ops import diff_dumps, inspect_dump
from vecfmt.ops.adopt import adopt, adopt_vdf, is_vdf
from vecfmt.ops.incremental import BY_MARKER, FOUND_BY, compact, export_delta, restore
from vecfmt.ops.report import DEFAULT_SAMPLE as REPORT_SAMPLE
from vecfmt.ops.report import write_report
from vecfmt.ops.validate import validate_dumps
from vecfmt.parallel import export_partitioned, import_partitioned
from vecfmt.process import map_large_blocks
from vecfmt.quality.plan import plan
from vecfmt.quality.reembed import DEFAULT_BATCH_SIZE as REEMBED_BATCH
from vecfmt.quality.reembed import reembed
from vecfmt.quality.tune import tune
from vecfmt.quality.verify import DEFAULT_K, DEFAULT_QUERIES, DEFAULT_SAMPLE, verify
from vecfmt.stores.base import IfExists
from vecfmt.transfer import DEFAULT_BATCH_SIZE, TransferResult, copy, export, import_dump

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Move vector embeddings between stores through a portable Arrow/Parquet dump format.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
NamespaceOpt = Annotated[
    list[str] | None, typer.Option("--namespace", "-n", help="Only this namespace (repeatable).")
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Rows per batch.")]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _progress(quiet: bool, as_json: bool) -> bool | None:
    return False if quiet or as_json else None  # None: only when stderr is a terminal


# validate and diff answer a question with their exit code, as cmp, diff and git diff --exit-code do:
# 0 valid/identical, 1 problems/differences found, 2 could not answer (bad input, unreadable dump).
COULD_NOT_RUN = 2


@contextmanager
def _could_not_run_exits_2() -> Iterator[None]:
    """Errors exit 2 rather than 1, so that a script cannot take "no such dump" for "different"."""
    try:
        yield
    except (VecfmtError, OSError) as exc:
        err.print(_error_line(exc), markup=False)
        raise typer.Exit(COULD_NOT_RUN) from None


# The library's messages name its parameters; the commands' name their flags.
_FLAG_WORDS = re.compile(r"\bpass overwrite\b|\bif_exists (?=fail|append|upsert|replace)")


@contextmanager
def _flags_named() -> Iterator[None]:
    """A library message as a command's: ``pass overwrite`` and ``if_exists replace`` as the flags that do it."""
    try:
        yield
    except VecfmtError as exc:
        message = _FLAG_WORDS.sub(lambda m: "pass --overwrite" if "overwrite" in m[0] else "--if-exists ", str(exc))
        raise type(exc)(message) from None


def _model(name: str | None, provider: str | None) -> EmbeddingModel | None:
    return EmbeddingModel(name=name, provider=provider) if name or provider else None


class EngineName(str, Enum):
    LOCAL = "local"
    RAY = "ray"


WorkersOpt = Annotated[int | None, typer.Option(
    min=1, help="Run in partitions on this many workers at once (docs/parallel.md); without it (and without "
    "--engine ray), one process does it in order.")]
EngineOpt = Annotated[EngineName, typer.Option(
    help="Where the partitions run: local worker processes, or tasks on a Ray cluster (vecfmt's ray extra; the "
    "dump on object storage every node reaches).")]
RayAddressOpt = Annotated[str | None, typer.Option(
    help="The Ray cluster for --engine ray (default: $RAY_ADDRESS, else a new one on this machine).")]


def _partitioned(workers: int | None, engine: EngineName, ray_address: str | None) -> bool:
    """Whether the options ask for a partitioned run."""
    if ray_address is not None and engine != EngineName.RAY:
        raise InvalidDataError("--ray-address is for --engine ray")
    return workers is not None or engine != EngineName.LOCAL


@app.command("export")
def export_cmd(
    source: Annotated[str, typer.Argument(help="Store URI, e.g. lancedb://./db?table=items")],
    dump: Annotated[str, typer.Argument(help="Dump location: a path or s3://, gs://, file:// URI.")],
    namespace: NamespaceOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dump.")] = False,
    resume: Annotated[bool, typer.Option(help="Checkpoint as files finish; continue an interrupted export.")] = False,
    model: Annotated[str | None, typer.Option(help="Embedding model name to record.")] = None,
    model_provider: Annotated[str | None, typer.Option(help="Embedding model provider.")] = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    engine: EngineOpt = EngineName.LOCAL,
    ray_address: RayAddressOpt = None,
    since: Annotated[list[str] | None, typer.Option(
        "--since", help="Write only what changed since this dump (a delta, docs/incremental.md); a delta's bases "
        "are followed, or give the whole chain in order, full dump first (repeatable).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a store to a dump, or with --since only its changes since a dump (a delta)."""
    if since:
        if namespace or resume or _partitioned(workers, engine, ray_address):
            raise InvalidDataError("--since exports every namespace in one process and cannot resume: leave out "
                                   "--namespace, --resume, --workers and --engine")
        with _flags_named():
            manifest = export_delta(source, dump, since[0] if len(since) == 1 else since,
                                    model=_model(model, model_provider), batch_size=batch_size, overwrite=overwrite,
                                    progress=_progress(quiet, as_json))
    elif not _partitioned(workers, engine, ray_address):
        manifest = export(source, dump, namespaces=namespace, model=_model(model, model_provider),
                          batch_size=batch_size, overwrite=overwrite, resume=resume,
                          progress=_progress(quiet, as_json))
    else:
        manifest = export_partitioned(source, dump, workers=workers, engine=engine.value, ray_address=ray_address,
                                      namespaces=namespace, model=_model(model, model_provider),
                                      batch_size=batch_size, overwrite=overwrite, resume=resume,
                                      progress=_progress(quiet, as_json))
    if as_json:
        _print_json(manifest.to_dict())
    elif not quiet and manifest.is_delta:
        found = manifest.extra.get(FOUND_BY) or {}
        how = ("found by the store's change marker" if found.get("found_by") == BY_MARKER else
               f"found by comparing row digests: {found.get('why', 'no change marker')}")
        out.print(f"exported {manifest.total_rows:,} added or changed rows and "
                  f"{sum(ns.deleted or 0 for ns in manifest.namespaces):,} deleted ids to {dump} ({how})",
                  markup=False)
    elif not quiet:
        out.print(f"exported {manifest.total_rows:,} rows in {len(manifest.files)} files to {dump}")


@app.command("restore")
def restore_cmd(
    chain: Annotated[list[str], typer.Argument(metavar="CHAIN...", help="A full dump, then its deltas in order.")],
    target: Annotated[str, typer.Argument(help="Store URI, e.g. lancedb://./db?table=items")],
    if_exists: Annotated[IfExists, typer.Option(help="What to do when the target exists.")] = IfExists.FAIL,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a chain (a full dump, then its deltas in order) into a store: what applying them gives."""
    with _flags_named():
        result = restore(chain, target, if_exists=if_exists, batch_size=batch_size,
                         progress=_progress(quiet, as_json))
    _report_transfer("restored", result, quiet, as_json)


@app.command("compact")
def compact_cmd(
    chain: Annotated[list[str], typer.Argument(metavar="CHAIN...", help="A full dump, then its deltas in order.")],
    output: Annotated[str, typer.Argument(metavar="OUT", help="Dump location to write.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dump at OUT.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fold a chain (a full dump, then its deltas in order) into one full dump."""
    with _flags_named():
        manifest = compact(chain, output, overwrite=overwrite, progress=_progress(quiet, as_json))
    if as_json:
        _print_json(manifest.to_dict())
    elif not quiet:
        out.print(f"compacted {len(chain)} dumps into {manifest.total_rows:,} rows in {output}", markup=False)


@app.command("import")
def import_cmd(
    dump: Annotated[str, typer.Argument(help="Dump location.")],
    target: Annotated[str, typer.Argument(help="Store URI, e.g. lancedb://./db?table=items")],
    if_exists: Annotated[IfExists, typer.Option(help="What to do when the target exists.")] = IfExists.FAIL,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted import of this dump.")] = False,
    namespace: NamespaceOpt = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    engine: EngineOpt = EngineName.LOCAL,
    ray_address: RayAddressOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a dump into a store; with --workers, its files load on several workers (docs/parallel.md)."""
    if not _partitioned(workers, engine, ray_address):
        result = import_dump(dump, target, if_exists=if_exists, resume=resume, namespaces=namespace,
                             batch_size=batch_size, progress=_progress(quiet, as_json))
    else:
        result = import_partitioned(dump, target, workers=workers, engine=engine.value, ray_address=ray_address,
                                    if_exists=if_exists, resume=resume, namespaces=namespace,
                                    batch_size=batch_size, progress=_progress(quiet, as_json))
    _report_transfer("imported", result, quiet, as_json)


@app.command("copy")
def copy_cmd(
    source: Annotated[str, typer.Argument(help="Source store URI.")],
    target: Annotated[str, typer.Argument(help="Target store URI.")],
    if_exists: Annotated[IfExists, typer.Option(help="What to do when the target exists.")] = IfExists.FAIL,
    namespace: NamespaceOpt = None,
    model: Annotated[str | None, typer.Option(help="Embedding model name to record.")] = None,
    via: Annotated[str | None, typer.Option(help="Write a dump here on the way (a backup), then import it.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted copy --via.")] = False,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a store into another: directly, or --via a dump that is kept as a backup (resumable)."""
    result = copy(source, target, if_exists=if_exists, namespaces=namespace, model=_model(model, None),
                  batch_size=batch_size, progress=_progress(quiet, as_json), via=via, resume=resume)
    _report_transfer("copied", result, quiet, as_json)


def _report_transfer(verb: str, result: TransferResult, quiet: bool, as_json: bool) -> None:
    if as_json:
        _print_json({**result.__dict__, "rows_per_second": result.rows_per_second})
    elif not quiet:
        resumed = f" (resumed after {result.rows_skipped:,})" if result.rows_skipped else ""
        out.print(f"{verb} {result.rows:,} rows{resumed} in {result.seconds:.1f} s "
                  f"({result.rows_per_second:,.0f} rows/s)")


@app.command("inspect")
def inspect_cmd(
    dump: Annotated[str, typer.Argument(help="Dump location.")],
    samples: Annotated[int, typer.Option(help="Sample rows to show per namespace.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Counts, vectors, model, files, metadata keys, vector norms and sample rows of a dump."""
    report = inspect_dump(dump, sample_rows=samples)
    if as_json:
        _print_json(report)
        return
    model = report["embedding_model"] or {}
    source = report["source"] or {}
    out.print(f"[bold]{report['uri']}[/]  vecfmt {report['format_version']}, created {report['created_at']}")
    if report["kind"] == "delta":
        base = report["base"]
        out.print(f"delta of {base['uri']} ({base['kind']} dump made {base['created_at']}, manifest SHA-256 "
                  f"{base['manifest_sha256'][:16]}...): the rows below are those it adds or changes", markup=False)
    out.print(f"source: {source.get('kind', '?')} {source.get('name') or ''}   "
              f"model: {model.get('name') or 'unknown'} ({model.get('provider') or '?'})")
    out.print(f"rows: {report['total_rows']:,} in {len(report['files'])} files, "
              f"{report['total_bytes'] / 1e6:,.1f} MB; sparse: {report['sparse_values']}, "
              f"document: {report['document']}")
    vectors = Table("vector", "column", "dims", "metric", title="vectors", title_justify="left")
    for v in report["vectors"]:
        vectors.add_row(v["name"], v["column"], str(v["dimension"]), v["metric"])
    out.print(vectors)
    for ns in report["namespaces"]:
        out.print(f"\n[bold]namespace {ns['name']!r}[/] ({ns['path']}): {ns['rows']:,} rows, "
                  f"{ns['files']} files, {ns['bytes'] / 1e6:,.2f} MB")
        if "deleted" in ns:
            out.print(f"  {ns['deleted']:,} deleted ids; {ns['rows_after']:,} rows once applied", markup=False)
        for column, stats in ns["vector_norms"].items():
            if stats["count"]:
                flag = "  [green]normalized[/]" if stats["normalized"] else ""
                out.print(f"  {column} norms: min {stats['min']:.4f} mean {stats['mean']:.4f} "
                          f"max {stats['max']:.4f}{flag}")
        keys = ns["metadata_keys"]
        if keys["keys"]:
            table = Table("metadata key", "JSON types", "fill rate",
                          title=f"metadata (first {keys['sampled_rows']:,} rows)", title_justify="left")
            for key, info in keys["keys"].items():
                table.add_row(key, ", ".join(info["types"]), f"{info['fill_rate']:.0%}")
            out.print(table)
        for row in ns["sample_rows"]:
            out.print("  " + json.dumps(row, ensure_ascii=False, default=str))


@app.command("report")
def report_cmd(
    dump: Annotated[str, typer.Argument(help="Dump location.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML file to write.")],
    verify_json: Annotated[str | None, typer.Option(
        "--verify-json", help="The output of `vecfmt verify --json` for this dump's migration.")] = None,
    sample: Annotated[int, typer.Option(min=1, help="Rows in the 2-D map; metadata rows per namespace.")] = (
        REPORT_SAMPLE),
    quiet: QuietOpt = False,
) -> None:
    """One self-contained HTML page for deciding whether a backup or a migration is sound: counts, files
    and checksums, metadata fill rates, vector norms, duplicate and near-zero vectors, a 2-D map of a
    sample, and verify's figures. Exit 2 when it could not be made."""
    with _could_not_run_exits_2():
        summary = write_report(dump, output, verify_json=verify_json, sample=sample, progress=_progress(quiet, False))
    if not quiet:
        out.print(f"wrote {summary.path} ({summary.rows:,} rows, {summary.bytes / 1e6:,.1f} MB)", markup=False)


@app.command("validate")
def validate_cmd(
    dumps: Annotated[list[str], typer.Argument(
        metavar="DUMP...", help="Dump location; several: a chain (a full dump, then its deltas in order).")],
    as_json: JsonOpt = False,
) -> None:
    """Check a dump (or a chain: each dump, and its links) completely, naming each problem's file and row.
    Exit 0 when it is valid, 1 when problems were found, 2 when it could not run (nothing at that location,
    a bad URI)."""
    followed: list[str] = []  # a delta alone is checked with the chain of its bases
    with _could_not_run_exits_2():
        problems = validate_dumps(dumps, followed)
    dump = " ".join(dumps) + (f" (with the chain of its bases: {' '.join(followed)})" if followed else "")
    if as_json:
        _print_json({"valid": not problems, **({"chain": followed} if followed else {}),
                     "problems": [{"file": p.file, "row": p.row, "message": p.message} for p in problems]})
    elif problems:
        for p in problems:
            err.print(f"invalid: {p}", markup=False)
    else:
        out.print(f"valid: {dump}")
    if problems:
        raise typer.Exit(1)


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="First dump.")],
    b: Annotated[str, typer.Argument(help="Second dump.")],
    tolerance: Annotated[float, typer.Option(help="Largest per-component difference still equal.")] = 0.0,
    vector: Annotated[str | None, typer.Option(help="Vector to compare (default: the primary).")] = None,
    output: Annotated[str | None, typer.Option(help="Write every differing row to this Parquet file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two dumps by id. Exit 0 when identical, 1 when they differ, 2 when it could not compare
    them (a dump missing or unreadable, vectors of other dimensions)."""
    with _could_not_run_exits_2():
        result = diff_dumps(a, b, tolerance=tolerance, vector=vector, output=output)
    report = result.to_dict()
    if as_json:
        _print_json(report)
    else:
        t = report["totals"]
        out.print(f"A: {t['rows_a']:,} rows   B: {t['rows_b']:,} rows")
        out.print(f"only in A: {t['only_in_a']:,}   only in B: {t['only_in_b']:,}   "
                  f"vectors changed: {t['vectors_changed']:,} (tolerance {tolerance:g})   "
                  f"metadata changed: {t['metadata_changed']:,}   documents changed: {t['documents_changed']:,}")
        out.print(f"max abs difference: {t['max_abs_diff']:.3g}   "
                  f"max cosine drift: {1 - t['min_cosine_similarity']:.3g}")
        for side in ("a", "b"):
            if report[f"columns_only_in_{side}"]:
                out.print(f"columns only in {side.upper()}: {', '.join(report[f'columns_only_in_{side}'])}")
        for name, ns in report["namespaces"].items():
            for kind, ids in ns["examples"].items():
                out.print(f"  {name!r} {kind}: {', '.join(map(repr, ids))}", markup=False)
        out.print("identical" if result.identical else "different")
    if not result.identical:
        raise typer.Exit(1)


@app.command("adopt")
def adopt_cmd(
    source: Annotated[str, typer.Argument(help="Parquet/Arrow file or folder (or a vector-io VDF dump).")],
    dump: Annotated[str, typer.Argument(help="Dump location to write.")],
    id_column: Annotated[str | None, typer.Option("--id", help="Id column (default: id).")] = None,
    vector: Annotated[str | None, typer.Option(help="Vector column (default: the only float list column).")] = None,
    metadata: Annotated[list[str] | None, typer.Option(
        help="Metadata column (repeatable; default: every other column).")] = None,
    document: Annotated[str | None, typer.Option(help="Document text column (default: document, if any).")] = None,
    model: Annotated[str | None, typer.Option(help="Embedding model name to record.")] = None,
    model_provider: Annotated[str | None, typer.Option(help="Embedding model provider.")] = None,
    metric: Annotated[str, typer.Option(help="cosine, dot or euclidean.")] = "cosine",
    namespace: Annotated[str, typer.Option(help="Namespace of the rows.")] = "",
    index: Annotated[str | None, typer.Option(help="Which index of a VDF dump holding several.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dump.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a dump of embeddings already in Parquet or Arrow files (Hugging Face datasets, pandas exports,
    vector-io dumps): columns mapped, vectors checked and stored as float32, streaming."""
    if is_vdf(source):
        manifest = adopt_vdf(source, dump, index=index, overwrite=overwrite, progress=_progress(quiet, as_json))
    else:
        manifest = adopt(source, dump, id_column=id_column, vector_column=vector, metadata_columns=metadata,
                         document_column=document, model=_model(model, model_provider), metric=metric,
                         namespace=namespace, overwrite=overwrite, progress=_progress(quiet, as_json))
    if as_json:
        _print_json(manifest.to_dict())
    elif not quiet:
        out.print(f"adopted {manifest.total_rows:,} rows ({manifest.primary.dimension if manifest.primary else 0} "
                  f"dims) into {dump}")


@app.command("plan")
def plan_cmd(
    dump: Annotated[str, typer.Argument(help="Dump location.")],
    target_model: Annotated[str, typer.Option(help="The embedding model the vectors must come from.")],
    target: Annotated[str | None, typer.Option(help="Target store URI or scheme (its limits are checked).")] = None,
    dimensions: Annotated[int | None, typer.Option(min=1, help="Output dimension asked of the model.")] = None,
    source_model: Annotated[str | None, typer.Option(
        help="The model that made the dump's vectors, when its manifest does not say.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    tier: Annotated[str, typer.Option(help="Provider usage tier for rate limits (e.g. tier1).")] = "tier1",
    request_seconds: Annotated[float, typer.Option(min=0, help="Assumed seconds per request.")] = 2.0,
    price: Annotated[list[str] | None, typer.Option(help="MODEL=USD per million tokens (repeatable).")] = None,
    tokens: Annotated[str, typer.Option(help="auto, exact or estimate.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Copy or re-embed? The decision and why, the re-embedding cost and time from the dump's documents,
    and the target store's limits. Exit 1 when what the move needs is impossible."""
    with _could_not_run_exits_2():
        result = plan(dump, target_model=target_model, target=target, dimensions=dimensions,
                      source_model=source_model, concurrency=concurrency, tier=tier,
                      request_seconds=request_seconds, prices=_prices(price), tokens=tokens)  # type: ignore[arg-type]
    if as_json:
        _print_json(result.to_dict())
    else:
        table = Table(box=None, show_header=False)
        table.add_column(no_wrap=True, style="bold")
        table.add_column()
        for label, value in result.rows():
            table.add_row(label, value)
        out.print(table)
    raise typer.Exit(result.exit_code)


def _prices(pairs: list[str] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    prices = {}
    for pair in pairs:
        model, sep, usd = pair.partition("=")
        try:
            prices[model] = float(usd) if sep and model else float("nan")
        except ValueError:
            prices[model] = float("nan")
        if not 0 <= prices[model] < float("inf"):  # NaN and infinity too: a cost of $inf is no estimate
            raise InvalidDataError(f"--price takes MODEL=USD_PER_MILLION_TOKENS, not {pair!r}")
    return prices


@app.command("reembed")
def reembed_cmd(
    dump: Annotated[str, typer.Argument(help="Dump whose document texts to embed again.")],
    new_dump: Annotated[str, typer.Argument(metavar="OUT", help="Dump location to write.")],
    model: Annotated[str, typer.Option(help="Model: text-embedding-3-small, all-MiniLM-L6-v2, a local path...")],
    provider: Annotated[str | None, typer.Option(help="openai or local (default: from the model).")] = None,
    dimensions: Annotated[int | None, typer.Option(min=1, help="Output dimension (models that take one).")] = None,
    base_url: Annotated[str | None, typer.Option(help="API base URL (default: the provider's).")] = None,
    batch_size: BatchOpt = REEMBED_BATCH,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    truncate: Annotated[bool, typer.Option(help="Cut texts over the model's input limit instead of failing.")] = False,
    metric: Annotated[str, typer.Option(help="Metric of the new vectors.")] = "cosine",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run (no text is paid twice).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dump at OUT.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed a dump's documents with another model into a new dump: ids, metadata and documents carried
    over, the model recorded. The API key comes from OPENAI_API_KEY."""
    result = reembed(dump, new_dump, model=model, provider=provider, dimensions=dimensions, base_url=base_url,
                     batch_size=batch_size, concurrency=concurrency, truncate=truncate, metric=metric, resume=resume,
                     overwrite=overwrite, progress=_progress(quiet, as_json))
    if as_json:
        _print_json({k: v for k, v in result.__dict__.items() if k != "manifest"}
                    | {"rows_per_second": result.rows_per_second})
    elif not quiet:
        resumed = f" (resumed after {result.rows_skipped:,})" if result.rows_skipped else ""
        out.print(f"embedded {result.rows:,} documents{resumed} with {result.model} ({result.dimension} dims) in "
                  f"{result.seconds:.1f} s: {result.tokens:,} tokens, {result.requests:,} requests, "
                  f"{result.retries:,} retries")


@app.command("tune")
def tune_cmd(
    target: Annotated[str, typer.Argument(help="Store URI whose search-time setting to tune.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Results per query.")] = 10,
    queries: Annotated[int, typer.Option(min=1, help="Query vectors drawn from the store's data.")] = 100,
    target_recall: Annotated[float, typer.Option(min=0, max=1, help="Recall@k to reach.")] = 0.95,
    knob: Annotated[str | None, typer.Option(help="Setting to sweep (default: the index's own).")] = None,
    value: Annotated[list[int] | None, typer.Option(help="A value to try (repeatable; default: a sweep).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace to query.")] = None,
    rebuild: Annotated[list[str] | None, typer.Option(
        help="Also try an HNSW index built with M,EF_CONSTRUCTION on a temporary copy (repeatable).")] = None,
    plot: Annotated[str | None, typer.Option(help="Save a recall-vs-latency plot (PNG) here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query sample.")] = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep a search-time setting (pgvector hnsw.ef_search, ivfflat.probes; LanceDB nprobes): recall@k
    against the exact answer and p50/p95 latency; recommend the smallest setting that reaches the target.
    Exit 1 when no setting does."""
    with _could_not_run_exits_2():
        report = tune(target, k=k, queries=queries, target_recall=target_recall, knob=knob, values=value,
                      namespace=namespace, rebuild=_pairs(rebuild), plot=plot, seed=seed,
                      progress=_progress(quiet, as_json))
    if as_json:
        _print_json(report.to_dict())
    else:
        table = Table(box=None)
        for header in report.HEADERS:
            table.add_column(header, no_wrap=True, min_width=len(header))
        for cells in report.table():
            table.add_row(*cells)
        out.print(table)
        for note in report.notes:
            out.print(f"note: {note}", markup=False)
        out.print(report.message, markup=False)
    if report.recommended is None:
        raise typer.Exit(1)


def _pairs(pairs: list[str] | None) -> list[tuple[int, int]] | None:
    if not pairs:
        return None
    parsed = []
    for pair in pairs:
        try:
            m, ef = (int(part) for part in pair.split(","))
        except ValueError:
            raise InvalidDataError(f"--rebuild takes M,EF_CONSTRUCTION (e.g. 16,64), not {pair!r}") from None
        parsed.append((m, ef))
    return parsed


@app.command("verify")
def verify_cmd(
    source: Annotated[str, typer.Argument(help="Dump location or store URI migrated from.")],
    target: Annotated[str, typer.Argument(help="Dump location or store URI migrated to.")],
    sample: Annotated[int, typer.Option(min=0, help="Rows compared exactly (a uniform sample).")] = DEFAULT_SAMPLE,
    full: Annotated[bool, typer.Option("--full", help="Compare every row exactly.")] = False,
    queries: Annotated[int, typer.Option(min=0, help="Query vectors drawn from the data (0: no search).")] = (
        DEFAULT_QUERIES),
    queries_file: Annotated[str | None, typer.Option(
        "--queries-file", help="A dump or Parquet file of query vectors (or texts to embed) instead.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Results per query.")] = DEFAULT_K,
    namespace: NamespaceOpt = None,
    min_recall: Annotated[float | None, typer.Option(min=0, max=1, help="Fail below this recall@k.")] = None,
    min_overlap: Annotated[float | None, typer.Option(min=0, max=1, help="Fail below this overlap@k.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the queries.")] = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a migration: rows, ids, exact vectors and metadata of a sample, and search results against
    the exact answer. Exit 0 when it passes, 1 on a problem (or below --min-recall/--min-overlap),
    2 when it could not run."""
    with _could_not_run_exits_2():
        report = verify(source, target, sample=sample, full=full, queries=queries, queries_file=queries_file,
                        k=k, namespaces=namespace, min_recall=min_recall, min_overlap=min_overlap, seed=seed,
                        progress=_progress(quiet, as_json))
    if as_json:
        _print_json(report.to_dict())
    else:
        table = Table(box=None)
        for header in ("namespace", "source", "target", "missing", "extra", "dups", "compared", "vectors≠",
                       "metadata≠", "docs≠"):
            table.add_column(header, min_width=len(header), no_wrap=True)
        for name, ns in report.namespaces.items():
            table.add_row(repr(name), f"{ns.rows_source:,}", f"{ns.rows_target:,}", f"{ns.missing:,}",
                          f"{ns.extra:,}", f"{ns.duplicates_target:,}", f"{ns.compared:,}", f"{ns.vectors_differ:,}",
                          f"{ns.metadata_differ:,}", f"{ns.documents_differ:,}")
        out.print(table)
        if report.search:
            s = report.search
            out.print(f"search ({s.queries} queries, k={s.k}, {s.metric}): overlap@{s.k} {s.overlap:.4f} "
                      f"(worst {s.worst_overlap:.2f}), identical top-k {s.identical:.1%}, recall@{s.k} source "
                      f"{s.recall_source:.4f}, target {s.recall_target:.4f} (worst {s.worst_recall_target:.2f})")
        for problem in report.problems:
            err.print(f"problem: {problem}", markup=False)
        if not quiet:
            out.print("passed" if report.passed else "failed")
    if not report.passed:
        raise typer.Exit(1)


@app.command("version")
def version_cmd() -> None:
    """Print vecfmt's version."""
    out.print(__version__)


_USERINFO = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _safe(message: str) -> str:
    """Last line of defence: no password in userinfo form reaches the terminal."""
    return _USERINFO.sub(r"\1***@", message)


def _error_line(exc: VecfmtError | OSError) -> str:
    if isinstance(exc, VecfmtError):
        return f"error: {_safe(str(exc))}"
    # a path that is a file, a folder that cannot be made, a disk that is full
    where = f": {exc.filename}" if exc.filename else ""
    return f"error: {_safe(exc.strerror or str(exc))}{_safe(str(where))}"


def main() -> None:
    map_large_blocks()
    try:
        app()
    except (VecfmtError, OSError) as exc:
        err.print(_error_line(exc), markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("VECFMT_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(f"error: {type(exc).__name__}: {_safe(first)} (set VECFMT_DEBUG=1 for details)", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
