"""``quill adapt``: a model of your own hand from a few lines of it.

Give it a folder of your lines with a ``labels.tsv`` (``file``, ``text``), as for ``quill data
import folder``, or a Quill dataset: ``quill monitor feedback-dataset`` turns the corrections
you typed in the web app into one, so the lines the model misread teach it. It fine-tunes
the model on them (:mod:`quill.training.adapt`), stages the result beside your other models
(:mod:`quill.staging.adapt`) and, with ``--hold-out N``, reads your last N lines with the
model before and after, so you see what it gained before you use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quill.errors import fail
from quill.inference import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from rich.console import Console

    from quill.inference.recognizer import Recognizer
    from quill.training.adapt_lines import AdaptLine


def adapt(
    lines: Annotated[
        Path,
        typer.Argument(
            help="Folder with your line images and a labels.tsv (columns file and text, "
            "tab-separated), the labels.tsv itself, or a Quill dataset folder (e.g. your "
            "corrections: quill monitor feedback-dataset).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Where to write the adapted staged model.", show_default=False
        ),
    ],
    model: Annotated[
        Path,
        typer.Option("--model", "-m", envvar="QUILL_MODEL_DIR", help="Staged model to adapt."),
    ] = DEFAULT_MODEL_DIR,
    hold_out: Annotated[
        int,
        typer.Option(
            "--hold-out",
            min=0,
            help="Keep your last N lines out of the adaptation and read them with the model "
            "before and after (CER). 0: adapt on every line, measure nothing.",
        ),
    ] = 0,
    steps: Annotated[
        int, typer.Option(min=1, help="Fine-tuning steps (each a batch of your lines, augmented).")
    ] = 30,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 3e-4,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the batches and augmentations.")] = 0,
    name: Annotated[
        str | None, typer.Option(help="The adapted model's name (default: --out's name).")
    ] = None,
) -> None:
    """Adapt a line model to your handwriting from a few transcribed lines of it.

    Give ten lines or more (at least three): on the 41 unseen writers of the test sets,
    adapting on the first half of each writer's lines (5 to 10) cut the CER on the rest from
    16.2% to 14.4%, 30 writers better and 9 worse, and more lines gain more (`quill bench
    adapt`, docs/training.md). Fine-tuning takes
    about six seconds on one CPU core, the whole command with staging (exports, parity, int8
    copy) under twenty.
    Then read with it: `quill predict --model OUT ...` or `QUILL_MODEL_DIR=OUT quill up`.
    Exits 2 for lines it cannot use (a missing image, an empty transcription, a character
    the model cannot write, fewer than three lines) and for an --out that is not a new folder
    or a staged model's.
    """
    # lazy: adapting imports torch and the training code, which `quill --help` must not
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from quill.data.readers.common import DatasetError
    from quill.errors import QuillError
    from quill.evaluation import score
    from quill.inference.recognizer import Recognizer
    from quill.preprocess import ImageError
    from quill.staging.adapt import adapt_staged
    from quill.staging.model_card import with_held_out_section
    from quill.training.adapt import AdaptConfig
    from quill.training.adapt_lines import ADVISED_LINES, MIN_LINES, AdaptLine, held_out

    console = Console(stderr=True)
    try:
        rows = read_adapt_lines(lines, console)
        config = AdaptConfig(steps=steps, learning_rate=learning_rate, seed=seed)
        train, measure = held_out(
            [AdaptLine(path, text, path.name) for path, text in rows], hold_out
        )
        if MIN_LINES <= len(train) < ADVISED_LINES:  # fewer are refused, not advised on
            console.print(
                f"[yellow]adapting on {len(train)} lines:[/] on unseen writers, three or five "
                "lines gained nothing on average, ten 2.5 to 3.8 CER points and twenty 3.7 to "
                "5.3; transcribe more if you can"
            )
        before = _read(Recognizer.from_path(model), measure) if measure else None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[loss]}"),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("adapting", total=steps, loss="")
            adapted = adapt_staged(
                model,
                train,
                out,
                config,
                name,
                progress=lambda step: bar.update(task, description=step),
                on_step=lambda done, _, loss: bar.update(
                    task, completed=done, loss=f"loss {loss:.3f}"
                ),
            )
    except ImageError as exc:  # a held-out line, read before adapting (the others are checked)
        raise fail(f"a held-out line cannot be read: {exc}") from exc
    except (DatasetError, QuillError, ValueError) as exc:  # ValueError: a malformed manifest
        raise fail(str(exc)) from exc
    console.print(
        f"[green]adapted[/] {adapted.model.version} -> {out} ({len(train)} lines, {steps} "
        f"steps, loss {adapted.losses[0]:.3f} -> {adapted.losses[-1]:.3f})"
    )
    if adapted.int8_skipped:
        console.print(f"[yellow]no int8 copy:[/] {adapted.int8_skipped}")
    if measure and before is not None:
        recognizer = Recognizer.from_path(out)
        after = _read(recognizer, measure)
        # scored as the bench scores (normalised: extra spaces in a label are no error of the
        # model's)
        references = [line.text for line in measure]
        rates = score(before, references).cer, score(after, references).cer
        console.print(
            f"your {len(measure)} held-out lines, CER ({recognizer.backend}): "
            f"before {rates[0]:.1%}, after {rates[1]:.1%}"
        )
        card = recognizer.model.card_path
        card.write_text(
            with_held_out_section(card.read_text(), len(measure), *rates, recognizer.backend)
        )
        if rates[1] > rates[0]:
            console.print(
                "[yellow]the adapted model reads your held-out lines worse than its base:[/] "
                "keep the base, or adapt on more lines"
            )


def read_adapt_lines(source: Path, console: Console) -> list[tuple[Path, str]]:
    """(image, text) of each line in ``source``: a folder with ``labels.tsv``, or a Quill
    dataset (``manifest.jsonl``, e.g. what ``quill monitor feedback-dataset`` made of your
    corrections in the web app), whose line samples are used in order, all splits."""
    from quill.data.manifest import MANIFEST_NAME, Manifest
    from quill.data.readers.folder import labelled_lines

    if not (source / MANIFEST_NAME).is_file():
        return labelled_lines(source)
    dataset = Manifest.load(source)
    lines = [(dataset.path_of(s), s.text) for s in dataset.samples if s.kind == "line"]
    others = len(dataset.samples) - len(lines)
    if others:
        console.print(f"{others} paragraph sample(s) left out: only single lines adapt a model")
    return lines


def _read(recognizer: Recognizer, lines: list[AdaptLine]) -> list[str]:
    """The texts ``recognizer`` reads in ``lines``' images, each read as one line."""
    return [p.text for p in recognizer.predict([line.image for line in lines], kind="line")]
