"""``quill bench``: measure Quill against the recognisers a user would pick instead.

``accuracy`` scores CER/WER per dataset and slice, ``speed`` times latency and throughput per
runtime. Both write ``<out>/<name>.json`` (everything) and ``<out>/<name>.md`` (the tables).
Heavy imports (torch, onnxruntime, the peers) happen inside the commands.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console

from quill.errors import check_output, fail

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.progress import Progress, TaskID

    from quill.bench.systems import System
    from quill.data.manifest import Split
    from quill.inference.recognizer import Segmenter

console = Console()

PEER_HELP = "Peer to compare against: tesseract, rapidocr (repeat for both)."
THREADS_HELP = "Intra-op threads for Quill's runtime and each peer."
DATA_HELP = (
    "A Quill dataset folder (manifest.jsonl), a folder with labels.tsv (split by writer when "
    "every page id is writer__page, e.g. copiste; else by page, e.g. the Hooker letters), or "
    "an IAM copy (xml/ + forms*/); NAME=PATH names it."
)
PAGES_HELP = (
    "A page set: a folder of PAGE XML or ALTO files naming their page images (or one file), "
    "or a folder with labels.tsv whose rows are whole pages (\\n marks a line break); "
    "NAME=PATH names it. Scores page CER/WER, line detection and line CER (repeat)."
)


def _progress():  # noqa: ANN202 - rich's Progress, imported lazily
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _load_peers(names: list[str], threads: int) -> tuple[list, dict[str, str]]:
    """Started peers, and a reason for each one that cannot run here (it is skipped)."""
    from quill.bench.peers import load_peer
    from quill.bench.systems import SystemUnavailable

    peers, unavailable = [], {}
    for name in dict.fromkeys(names):
        try:
            peers.append(load_peer(name, threads))
        except SystemUnavailable as exc:
            unavailable[name] = str(exc)
    return peers, unavailable


def _check_peer_names(names: list[str]) -> None:
    """Refuse, before any work, a name that is no peer: a typo would otherwise be reported
    as a skipped system at the end. A known peer that is not installed here is only
    skipped (:func:`_load_peers`)."""
    from quill.bench.peers import PEERS

    unknown = [name for name in dict.fromkeys(names) if name not in PEERS]
    if unknown:
        raise fail(f"unknown peer {', '.join(unknown)}; known peers: {', '.join(PEERS)}")


def _print_skipped(unavailable: dict[str, str]) -> None:
    for name, reason in unavailable.items():
        console.print(f"[yellow]skipped {name}:[/yellow] {reason}")


def accuracy(
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help=DATA_HELP + " Repeat, or list more paths after it."),
    ] = None,
    more_data: Annotated[
        list[str] | None, typer.Argument(help="More datasets (same forms as --data).")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Staged model directory (quill-model.json). Omit to run peers only."),
    ] = None,
    pages: Annotated[list[str] | None, typer.Option("--pages", help=PAGES_HELP)] = None,
    peer: Annotated[list[str] | None, typer.Option(help=PEER_HELP)] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="At most N samples per dataset (a seeded random draw)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of each dataset to read.")] = "test",
    backend: Annotated[
        str, typer.Option(help="Quill runtime: auto, onnx, onnx-int8, torchscript, eager.")
    ] = "auto",
    threads: Annotated[int, typer.Option(min=1, help=THREADS_HELP)] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per Quill call.")] = 16,
    also_decoding: Annotated[
        list[str] | None,
        typer.Option(
            "--also-decoding",
            help="Also measure the model with this CTC decoding (greedy, beam, or single-pass: "
            "its own decoding without its shifts) as "
            "quill-<method>, beside its own (repeat).",
        ),
    ] = None,
    segmenter: Annotated[
        list[str] | None,
        typer.Option(
            "--segmenter",
            help="Also read the page sets (--pages) with this line segmenter, as "
            "quill-<method>: trace (classical, the default's) or learned (the learned line "
            "detector, models/line_detector); repeat for both.",
        ),
    ] = None,
    slice_by: Annotated[
        list[str] | None,
        typer.Option("--slice", help="Sample field or meta key to report separately (repeat)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for accuracy.json/.md.")] = Path(
        "bench/results"
    ),
    cache: Annotated[Path, typer.Option(help="Where raw sources are imported once.")] = Path(
        ".cache/bench-datasets"
    ),
) -> None:
    """CER and WER of Quill and its peers on the same images, per dataset and slice.

    The test lines of every dataset split by writer are also pooled into one unseen-writers
    figure, reported first, with how each system's CER spreads over those writers (median,
    90th percentile and worst writer; accuracy.md and accuracy.json). Page sets (--pages) are
    read whole: page CER/WER, line detection recall/precision and the line CER on the same
    pages' ground-truth lines."""
    from quill.bench.accuracy import evaluate, pool_unseen_writers
    from quill.bench.datasets import DEFAULT_SLICES, BenchDataError, bench_tokenizer, load_dataset
    from quill.bench.machine import machine_info
    from quill.bench.page_sets import load_pages
    from quill.bench.pages import pages_markdown, write_page_predictions
    from quill.bench.report import accuracy_markdown, accuracy_payload, write, write_predictions
    from quill.bench.systems import QuillSystem, SystemUnavailable
    from quill.data.readers.common import DatasetError
    from quill.inference.recognizer import SEGMENTERS

    machine = machine_info()  # before the run: its load average says how busy the box was
    specs = [*(data or []), *(more_data or [])]
    slices = slice_by or list(DEFAULT_SLICES)
    if model is None and not peer:
        raise fail("nothing to measure: give --model DIR and/or --peer NAME")
    if not specs and not pages:
        raise fail("nothing to read: give --data PATH (lines, paragraphs) and/or --pages PATH")
    _check_peer_names(peer or [])
    check_output(out, folder=True)
    try:
        page_sets = [load_pages(spec) for spec in pages or []]
        # Raw sources are imported with a vocabulary the model can write (Latin + its own).
        tokenizer = bench_tokenizer(model)
        loaded = [
            load_dataset(
                spec,
                split=cast("Split", split),  # an unknown name reads no samples (refused below)
                limit=limit,
                slices=slices,
                cache_root=cache,
                show_progress=True,
                tokenizer=tokenizer,
            )
            for spec in specs
        ]
    except (BenchDataError, DatasetError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    datasets = [dataset for dataset in loaded if dataset.samples]
    empty = [dataset for dataset in loaded if not dataset.samples]
    for dataset in empty:
        console.print(f"[yellow]{dataset.name}: not scored:[/yellow] {dataset.note}")
    for page_set in page_sets:
        for reason in page_set.skipped:
            console.print(f"[yellow]{page_set.name}: left out[/yellow] {reason}")
    if specs and not datasets and not page_sets:
        raise fail(f"no dataset has {split!r} samples to read")
    systems = []
    if model is not None:
        variants = {"quill": None, **{f"quill-{d}": d for d in also_decoding or []}}
        try:
            systems += [
                QuillSystem.load(model, backend, threads, name=name, decoding=decoding)
                for name, decoding in variants.items()
            ]
        except SystemUnavailable as exc:
            raise fail(str(exc)) from exc
    segmented = []
    if model is not None and page_sets:
        for method in segmenter or []:
            if method not in SEGMENTERS:
                raise fail(f"--segmenter {method!r}: one of {', '.join(SEGMENTERS)}")
            reader = QuillSystem.load(
                model, backend, threads, name=f"quill-{method}", segmenter=cast("Segmenter", method)
            )
            segmented.append(reader)
    peers, unavailable = _load_peers(peer or [], threads)
    _print_skipped(unavailable)
    systems += peers
    if not systems:
        raise fail("no system left to measure (every peer is missing)")
    results, page_results = [], []
    with _progress() as progress:
        for dataset in datasets:
            tasks = {
                s.name: progress.add_task(f"{dataset.name}: {s.name}", total=len(dataset.samples))
                for s in systems
            }
            results.append(
                evaluate(
                    dataset,
                    systems,
                    batch_size,
                    partial(_advance, progress, tasks),
                )
            )
        for page_set in page_sets:
            page_results.append(_evaluate_page_set(page_set, systems + segmented, progress))
    quill = "quill" if model is not None else None
    unseen = pool_unseen_writers(results)
    payload = accuracy_payload(
        results,
        {s.name: s.describe() for s in systems + segmented},
        unavailable,
        machine,
        quill,
        unseen=unseen,
        empty=empty,
    )
    markdown = accuracy_markdown(payload)
    if page_results:
        payload["page_sets"] = [result.to_dict() for result in page_results]
        if not results:  # pages only: keep the header, drop the empty line-dataset summary
            markdown = markdown[: markdown.index("## Summary (CER, case-sensitive)")]
        markdown += ["", *pages_markdown(page_results)]
    json_path, md_path = write(out, "accuracy", payload, markdown)
    written = [json_path, md_path]
    if results:
        _print_accuracy(([unseen] if unseen else []) + results, [s.name for s in systems])
        written.append(write_predictions(out / "accuracy-predictions.jsonl", results))
    if page_results:
        _print_pages(page_results)
        written.append(
            write_page_predictions(out / "accuracy-page-predictions.jsonl", page_results)
        )
    console.print(f"wrote {', '.join(str(path) for path in written)}")


def _advance(progress: Progress, tasks: dict[str, TaskID], name: str, n: int) -> None:
    progress.advance(tasks[name], n)


def _evaluate_page_set(page_set, systems: Sequence[System], progress):  # noqa: ANN001, ANN202
    """Every system that can read a whole page reads ``page_set`` (a bar per system)."""
    from quill.bench.pages import evaluate_pages
    from quill.bench.systems import ReadsPages

    readers = [system for system in systems if isinstance(system, ReadsPages)]
    for system in systems:
        if system not in readers:
            console.print(f"[yellow]{page_set.name}: {system.name} cannot read whole pages[/]")
    tasks = {
        s.name: progress.add_task(f"{page_set.name}: {s.name} (pages)", total=len(page_set.pages))
        for s in readers
    }
    return evaluate_pages(page_set, readers, lambda name, n: progress.advance(tasks[name], n))


def _print_pages(results: list) -> None:
    from rich.table import Table

    from quill.bench.pages import HEADER, summary_rows

    for result in results:
        info = result.pages.describe()
        table = Table(
            title=f"{info['name']}: {info['pages']} pages, {info['lines']} lines "
            f"(page − line = CER points lost to finding and ordering lines)"
        )
        for index, column in enumerate(HEADER):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in summary_rows(result):
            table.add_row(*row)
        console.print(table)


def _print_accuracy(results: list, names: list[str]) -> None:
    from rich.table import Table

    from quill.bench.report import percent

    table = Table(title="CER (case-sensitive / case-insensitive)")
    table.add_column("dataset")
    table.add_column("samples", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for result in results:
        cells = []
        for name in names:
            overall = result.overall(name)
            cells.append(f"{percent(overall.cer)} / {percent(overall.cer_nocase)}")
        name = result.dataset.name
        if result.dataset.pooled:
            name = f"{name} ({' + '.join(result.dataset.pooled)})"
        table.add_row(name, str(len(result.dataset.samples)), *cells)
    console.print(table)


def speed(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset the fixed inputs come from. " + DATA_HELP)
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Staged model directory (quill-model.json). Omit to time peers only."),
    ] = None,
    batch: Annotated[
        list[int] | None, typer.Option(min=1, help="Batch size (repeat; default: 1 and 8).")
    ] = None,
    threads: Annotated[
        list[int] | None, typer.Option(min=1, help=THREADS_HELP + " Repeat; default: 1.")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="line and/or paragraph (repeat; default: both).")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Quill runtime: eager, torchscript, onnx, onnx-int8, auto (the runtime "
            "`--backend auto` serves with), auto-single-pass (the same, one network pass a "
            "line instead of its shifts), onnx-greedy (greedy CTC decoding whatever the "
            "model's decoding section says), onnx-python-beam (beam search in Python, not "
            "compiled: same answers) (repeat; default: all)."
        ),
    ] = None,
    peer: Annotated[list[str] | None, typer.Option(help=PEER_HELP)] = None,
    pages: Annotated[
        str | None,
        typer.Option(
            "--pages",
            help="Also time whole pages, one per call, each system finding the lines itself "
            "(Quill: Recognizer.predict with kind auto): a page set as --pages of `quill bench "
            "accuracy` takes it (PAGE XML / ALTO folder or labels.tsv of pages); NAME=PATH.",
        ),
    ] = None,
    inputs: Annotated[int, typer.Option(min=1, help="Fixed inputs per kind.")] = 16,
    images: Annotated[
        int, typer.Option(min=1, help="Images timed per row (at least 5 calls whatever the batch).")
    ] = 32,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls before each row.")] = 2,
    cold_start: Annotated[
        int,
        typer.Option(
            "--cold-start",
            min=0,
            help="Also time N cold starts: `quill predict --kind line` on one line as a new "
            "process each time, taking turns with `tesseract --psm 7` (with --peer "
            "tesseract); 0: skip.",
        ),
    ] = 0,
    split: Annotated[str, typer.Option(help="Split the inputs come from.")] = "test",
    out: Annotated[Path, typer.Option(help="Folder for speed.json/.md.")] = Path("bench/results"),
    cache: Annotated[Path, typer.Option(help="Where raw sources are imported once.")] = Path(
        ".cache/bench-datasets"
    ),
) -> None:
    """Latency p50/p95/p99 and throughput: eager vs TorchScript vs ONNX (and int8) vs peers,
    per line, paragraph and (with --pages) whole page."""
    from quill.bench.datasets import BenchDataError, load_dataset
    from quill.bench.inputs import speed_inputs
    from quill.bench.machine import machine_info
    from quill.bench.page_sets import load_pages
    from quill.bench.report import speed_markdown, speed_payload, write
    from quill.bench.speed import (
        BASELINE,
        VARIANTS,
        SpeedPlan,
        cold_start_markdown,
        page_inputs,
        run_speed,
    )
    from quill.data.readers.common import DatasetError
    from quill.staged_model import ModelLoadError, StagedModel

    kinds, variants = kind or ["line", "paragraph"], variant or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS] + [
        k for k in kinds if k not in ("line", "paragraph")
    ]
    if unknown:
        raise fail(f"unknown variant or kind: {', '.join(unknown)} (see --help)")
    if model is None and not peer:
        raise fail("nothing to time: give --model DIR and/or --peer NAME")
    _check_peer_names(peer or [])
    check_output(out, folder=True)
    if model is not None:
        try:
            StagedModel.load(model)
        except ModelLoadError as exc:
            raise fail(str(exc)) from exc
    machine = machine_info()  # before the run: its load average says how busy the box was
    plan = SpeedPlan(tuple(batch or (1, 8)), tuple(threads or (1,)), images, warmup)
    try:
        # An unknown split name reads no samples, refused below.
        wanted = cast("Split", split)
        dataset = load_dataset(data, split=wanted, cache_root=cache, show_progress=True)
        page_set = load_pages(pages) if pages else None
    except (BenchDataError, DatasetError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    fixed: dict = {k: v for k, v in speed_inputs(dataset.samples, inputs).items() if k in kinds}
    fixed = {k: v for k, v in fixed.items() if v}
    if not fixed:
        raise fail(f"{dataset.name} has no {' or '.join(kinds)} samples to time")
    if page_set is not None:
        for reason in page_set.skipped:
            console.print(f"[yellow]{page_set.name}: left out[/yellow] {reason}")
        fixed["page"] = page_inputs(page_set)
    unavailable: dict[str, str] = {}
    # a row per kind and batch size; whole pages at batch 1 only
    rows_per_system = (len(fixed) - ("page" in fixed)) * len(plan.batches) + ("page" in fixed)
    with tempfile.TemporaryDirectory(prefix="quill-int8-") as scratch, _progress() as progress:
        task = progress.add_task("timing", total=0)
        planned = [0]

        def load(count: int) -> list:
            """Quill's runtimes and the peers at ``count`` threads; grows the bar's total."""
            from quill.bench.speed import load_quill_variants

            systems, missing = (
                load_quill_variants(model, variants, count, Path(scratch)) if model else ([], {})
            )
            if missing and (variant or not systems):  # asked for by name, or none of them runs
                raise fail("cannot time " + "; ".join(f"{n}: {why}" for n, why in missing.items()))
            peers, missing_peers = _load_peers(peer or [], count)
            unavailable.update({**missing, **missing_peers})
            planned[0] += (len(systems) + len(peers)) * rows_per_system
            progress.update(task, total=planned[0])
            return [*systems, *peers]

        run = run_speed(
            load,
            fixed,
            plan,
            status=lambda text: progress.update(task, description=text),
            advance=lambda n: progress.advance(task, n),
        )
        if cold_start > 0:
            progress.update(task, description=f"cold starts: {cold_start} runs per system")
            cold = _time_cold_starts(model, fixed, Path(scratch), plan.threads[0], peer, cold_start)
    _print_skipped(unavailable)
    for key, reason in run.failures.items():
        console.print(f"[red]failed {key}:[/red] {reason}")
    source = {
        "source": f"{dataset.name} ({dataset.path}, split {split})",
        "line": len(fixed.get("line", [])),
        "paragraph": len(fixed.get("paragraph", [])),
        "page": len(fixed.get("page", [])),
        "page_source": f"{page_set.name} ({page_set.path})" if page_set else None,
        "warmup": warmup,
        "calls": f"max(5, {images} / batch)",
    }
    payload = speed_payload(run, unavailable, machine, source, BASELINE)
    markdown = speed_markdown(payload)
    if cold_start > 0:
        payload["cold_start"] = cold
        markdown += cold_start_markdown(cold)
    json_path, md_path = write(out, "speed", payload, markdown)
    console.print("\n".join(markdown[4:]))
    console.print(f"wrote {json_path} and {md_path}")


def _time_cold_starts(
    model: Path | None,
    fixed: dict,
    scratch: Path,
    threads: int,
    peers: list[str] | None,
    runs: int,
) -> dict:
    """The cold-start section of a speed run, on the first fixed line (written to a file)."""
    from quill.bench.speed import cold_start_commands, cold_start_payload, time_cold_starts

    lines = fixed.get("line") or []
    if not lines:
        return cold_start_payload([], {"all": "no line input to read"}, {})
    data = lines[0].image  # the file as the dataset has it, read by each program itself
    path = scratch / ("cold-start-line.jpg" if data[:2] == b"\xff\xd8" else "cold-start-line.png")
    path.write_bytes(data)
    commands, missing = cold_start_commands(model, path, threads, peers or [])
    rows, failures = time_cold_starts(commands, runs)
    return cold_start_payload(rows, missing, failures)


def register(app: typer.Typer) -> None:
    """Add ``quill bench accuracy|speed`` to the ``quill`` app."""
    bench = typer.Typer(
        name="bench",
        help="Measure Quill against Tesseract and RapidOCR: accuracy and speed, side by side.",
        no_args_is_help=True,
    )
    bench.command("accuracy")(accuracy)
    bench.command("speed")(speed)
    from quill.bench.adapt import adapt_command
    from quill.bench.loader import data_command
    from quill.bench.serve_load import serve_command

    bench.command("serve")(serve_command)
    bench.command("data")(data_command)
    bench.command("adapt")(adapt_command)
    app.add_typer(bench, name="bench")
