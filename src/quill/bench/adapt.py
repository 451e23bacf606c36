"""``quill bench adapt``: what adapting a model to one writer (``quill adapt``) gains, writer
by writer, on writers it never trained on.

For each writer of a split of each Quill dataset (``meta.writer``; the test writers of the
multi-writer sets are in no training split), the writer's lines are taken in file order: the
first half, at most ``--lines``, adapt a fresh copy of the model, and the rest are read by the
model before and after. Both readings use the same runtime (eager PyTorch, float32) and the
model's own decoding (beam search, language models, heights), so the gain is the adaptation's
alone. Writers with fewer than ``2 * MIN_LINES`` lines are left out: too few to adapt on and
to measure. ``--read-from K`` reads every writer's lines from the K-th on instead, so that
runs with different ``--lines`` read the same lines: how the gain grows with the lines a
user transcribes.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quill.errors import fail
from quill.training.adapt_lines import MIN_LINES, AdaptLine

if TYPE_CHECKING:
    from torch import nn

    from quill.models.decoding import CTCDecoder
    from quill.staged_model import StagedModel
    from quill.training.adapt import AdaptConfig


@dataclass(frozen=True)
class WriterGain:
    """One writer: lines adapted on and read, and the character errors before and after."""

    dataset: str
    writer: str
    adapted_lines: int
    read_lines: int
    characters: int
    errors_before: int
    errors_after: int
    seconds: float

    @property
    def cer_before(self) -> float:
        return self.errors_before / max(self.characters, 1)

    @property
    def cer_after(self) -> float:
        return self.errors_after / max(self.characters, 1)


def writers_of(dataset: Path, split: str) -> dict[str, list[tuple[Path, str]]]:
    """Each writer's (image, text) lines of ``split`` in ``dataset``, in file order."""
    from quill.data.manifest import Manifest

    manifest = Manifest.load(dataset)
    lines: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for sample in sorted(manifest.split(split), key=lambda s: s.image):  # type: ignore[arg-type]
        writer = (sample.meta or {}).get("writer")
        if writer:
            lines[writer].append((manifest.path_of(sample), sample.text))
    return dict(lines)


@dataclass(frozen=True)
class Base:
    """The model every writer starts from, read once per run: its metadata, its network
    (each writer adapts a copy) and its decoder (beam search and LMs)."""

    model: StagedModel
    network: nn.Module
    decoder: CTCDecoder

    @classmethod
    def load(cls, path: Path) -> Base:
        from quill.runtimes.backends import ctc_decoder
        from quill.staged_model import StagedModel
        from quill.staging.adapt import base_network

        model = StagedModel.load(path)
        return cls(model, base_network(model), ctc_decoder(model))


def measure_writer(
    base: Base,
    dataset: str,
    writer: str,
    lines: Sequence[tuple[Path, str]],
    most: int,
    config: AdaptConfig,
    read_from: int = 0,
) -> WriterGain:
    """Adapt a fresh copy of the base network on the writer's first lines, read the rest
    before and after: the first half, at most ``most``, and the lines after them; or with
    ``read_from``, the first ``most`` and the lines from ``read_from`` on, the same lines
    whatever ``most`` is."""
    from quill.evaluation.metrics import ErrorCounts
    from quill.inference.recognizer import Recognizer
    from quill.models.onnx_export import export_interface
    from quill.runtimes.backends import TorchModuleRuntime
    from quill.training.adapt import adapt_network

    start = time.perf_counter()
    model = base.model
    count = min(most, read_from) if read_from else min(most, len(lines) // 2)
    adapt_on = [AdaptLine(path, text, path.name) for path, text in lines[:count]]
    measured = lines[read_from or count :]
    images, references = [path for path, _ in measured], [text for _, text in measured]
    network = copy.deepcopy(base.network)

    def read() -> list[str]:
        runtime = TorchModuleRuntime(export_interface(network), model.family, 0, base.decoder)
        return [p.text for p in Recognizer(model, runtime, None, 1).predict(images, kind="line")]

    before = ErrorCounts.of(read(), references)
    adapt_network(network, model.tokenizer, model.preprocess, adapt_on, config)
    after = ErrorCounts.of(read(), references)
    return WriterGain(
        dataset,
        writer,
        count,
        len(images),
        before.chars,
        before.char_edits,
        after.char_edits,
        time.perf_counter() - start,
    )


def markdown(gains: Sequence[WriterGain], model: str, command: str) -> list[str]:
    """A table per dataset and all together: writers, lines, CER before and after."""
    groups = sorted({g.dataset for g in gains})
    rows = [(name, [g for g in gains if g.dataset == name]) for name in groups]
    if len(groups) > 1:
        rows.append(("all", list(gains)))
    lines = [
        f"# quill bench adapt: {model}",
        "",
        f"`{command}`",
        "",
        "| writers of | writers | lines adapted on | lines read | CER before | CER after | "
        "better / worse writers | s per writer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, members in rows:
        chars = sum(g.characters for g in members)
        before = sum(g.errors_before for g in members) / max(chars, 1)
        after = sum(g.errors_after for g in members) / max(chars, 1)
        better = sum(g.errors_after < g.errors_before for g in members)
        worse = sum(g.errors_after > g.errors_before for g in members)
        seconds = sum(g.seconds for g in members) / max(len(members), 1)
        lines.append(
            f"| {name} | {len(members)} | {sum(g.adapted_lines for g in members)} | "
            f"{sum(g.read_lines for g in members)} | {before:.2%} | {after:.2%} | "
            f"{better} / {worse} | {seconds:.0f} |"
        )
    return lines


def adapt_command(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="NAME=PATH of a Quill dataset whose lines name their writer (repeat), e.g. "
            "copiste=data/copiste.",
        ),
    ],
    model: Annotated[Path, typer.Option(help="Staged line model to adapt.")] = Path(
        "models/default"
    ),
    split: Annotated[str, typer.Option(help="Split whose writers are measured.")] = "test",
    lines: Annotated[
        int, typer.Option(min=MIN_LINES, help="Adapt on at most this many of a writer's lines.")
    ] = 10,
    steps: Annotated[int, typer.Option(min=1, help="Adaptation steps per writer.")] = 30,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 3e-4,
    read_from: Annotated[
        int,
        typer.Option(
            min=0,
            help="Read each writer's lines from this one on (0-based), the same lines for "
            "any --lines, and adapt on the first --lines (at most this many); writers with "
            f"fewer than it + {MIN_LINES} lines are left out. 0: adapt on the first half, at "
            "most --lines, and read the rest.",
        ),
    ] = 0,
    writers: Annotated[
        int, typer.Option(min=0, help="Measure at most this many writers per dataset (0: all).")
    ] = 0,
    out: Annotated[Path, typer.Option(help="Folder for adapt.json/.md.")] = Path("bench/results"),
) -> None:
    """CER on each unseen writer's lines before and after adapting to their first lines."""
    import torch
    from rich.console import Console

    from quill.bench.cli import _progress
    from quill.bench.datasets import parse_spec
    from quill.bench.machine import machine_info
    from quill.bench.report import write
    from quill.errors import QuillError
    from quill.training.adapt import AdaptConfig

    torch.set_num_threads(1)
    console = Console()
    config = AdaptConfig(steps=steps, learning_rate=learning_rate)
    if 0 < read_from < MIN_LINES:
        raise typer.BadParameter(f"0, or at least {MIN_LINES}", param_hint="--read-from")
    fewest = read_from + MIN_LINES if read_from else 2 * MIN_LINES
    try:
        work = []
        for spec in data:
            name, path = parse_spec(spec)
            found = writers_of(path, split)
            chosen = [w for w in sorted(found) if len(found[w]) >= fewest]
            work += [(name, w, found[w]) for w in chosen[: writers or None]]
        if not work:
            raise QuillError(f"no writer with {fewest}+ lines in the {split} split")
        base = Base.load(model)
        gains = []
        with _progress() as bar:
            task = bar.add_task("writers", total=len(work))
            for name, writer, rows in work:
                gains.append(measure_writer(base, name, writer, rows, lines, config, read_from))
                bar.update(task, advance=1)
    except (QuillError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    command = " ".join(
        ["quill bench adapt", *(f"--data {spec}" for spec in data), f"--model {model}"]
        + [f"--split {split} --lines {lines} --steps {steps} --learning-rate {learning_rate:g}"]
        + ([f"--read-from {read_from}"] if read_from else [])
    )
    table = markdown(gains, str(model), command)
    payload = {
        "model": str(model),
        "split": split,
        "read_from": read_from,
        "adapt": config.to_dict(),
        "machine": machine_info(),
        "writers": [
            {**asdict(g), "cer_before": g.cer_before, "cer_after": g.cer_after} for g in gains
        ],
    }
    json_path, md_path = write(out, "adapt", payload, table)
    console.print("\n".join(table[4:]))
    console.print(f"wrote {json_path} and {md_path}")
