"""``quill data synth``, ``quill data show`` and ``quill data stats``.

They live here rather than in :mod:`quill.data.cli` so that each concern of the data layer
owns its commands; :func:`add_commands` attaches them to the ``quill data`` group. Heavy
imports (numpy, Pillow, scipy) stay inside the command bodies so ``quill --help`` is instant.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from quill.errors import check_output, fail


class SynthKind(StrEnum):
    line = "line"
    paragraph = "paragraph"


class ImageFormat(StrEnum):
    jpg = "jpg"
    png = "png"


DatasetArg = Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.jsonl).")]


def synth_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to create.")],
    kind: Annotated[SynthKind, typer.Option(help="One line per image, or paragraphs.")] = (
        SynthKind.line
    ),
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of images.")] = 1000,
    seed: Annotated[
        int, typer.Option(min=0, help="Same seed, same images, whatever --workers.")
    ] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Processes (0 = one per core).")] = 0,
    image_format: Annotated[ImageFormat, typer.Option("--format", help="Image files.")] = (
        ImageFormat.jpg
    ),
    printed: Annotated[float, typer.Option(min=0, max=1, help="Share of printed fonts.")] = 0.15,
    corpus: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="UTF-8 text to draw from (default: Austen)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
) -> None:
    """Render synthetic handwriting (images + manifest) from real English text.

    40+ handwriting fonts and a few printed ones, with per-glyph jitter, slant, stroke
    width, warps, paper, ink colours and both polarities. Validation and test images use
    fonts that training never sees.
    """
    import shlex
    import time

    from rich.console import Console

    from quill.data.manifest import DatasetExistsError
    from quill.data.synth.corpus import CorpusError
    from quill.data.synth.fonts import FONTS, FontDirError
    from quill.data.synth.generate import SynthConfig, SynthError, check_resources, generate

    check_output(out, folder=True)
    config = SynthConfig(
        kind=kind.value,
        image_format=image_format.value,
        printed_fraction=printed,
        corpus=str(corpus) if corpus else None,
    )
    start = time.perf_counter()
    try:
        # generate() checks again (cached): here, to warn before the work starts
        _, absent = check_resources(config)
        if absent:
            Console(stderr=True, soft_wrap=True).print(
                f"[yellow]warning:[/yellow] {len(absent)} of {len(FONTS)} registered fonts are "
                "not installed, so their hands are left out (listed in synth.json); run "
                "scripts/install_fonts.sh",
                highlight=False,
            )
        manifest = generate(
            out,
            kind.value,
            n,
            seed,
            workers or None,
            config=config,
            overwrite=overwrite,
            progress=True,
        )
    except (SynthError, CorpusError, FontDirError, DatasetExistsError) as exc:
        raise fail(str(exc)) from exc
    seconds = time.perf_counter() - start
    counts = ", ".join(f"{k} {v}" for k, v in sorted(manifest.counts().items()))
    Console().print(
        f"Wrote {len(manifest)} {kind.value} images to {out} in {seconds:.1f} s "
        f"({len(manifest) / seconds:.1f} images/s): {counts}; "
        f"{len({s.group for s in manifest})} fonts; version {manifest.version}\n"
        f"Look at them: quill data show {shlex.quote(str(out))} "
        f"--out {shlex.quote(str(out / 'sheet.png'))}",
        soft_wrap=True,
        markup=False,  # a path may hold [brackets]
    )


def show_command(
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples on the sheet.")] = 24,
    columns: Annotated[int, typer.Option(min=1, max=8, help="Columns of tiles.")] = 2,
    width: Annotated[int, typer.Option(min=200, help="Sheet width in pixels.")] = 1600,
    split: Annotated[str | None, typer.Option(help="Only this split (train/val/test).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Which samples: another seed shows others.")] = 0,
) -> None:
    """Write a contact sheet PNG: each sample's image with its label underneath."""
    from quill.data.inspect import contact_sheet
    from quill.data.manifest import Manifest

    check_output(out, folder=False)
    try:
        manifest = Manifest.load(dataset)
        path = contact_sheet(
            manifest, out, n=n, columns=columns, width=width, seed=seed, split=split
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"Wrote {path}")


def stats_command(
    dataset: DatasetArg,
    top: Annotated[int, typer.Option(min=1, help="Characters shown in the histogram.")] = 100,
) -> None:
    """Print counts per split/source/kind, image and label sizes, and a character histogram."""
    from rich.console import Console

    from quill.data.inspect import dataset_stats, print_stats
    from quill.data.manifest import Manifest

    try:
        manifest = Manifest.load(dataset)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    print_stats(dataset_stats(manifest), Console(), top=top)


def add_commands(data_app: typer.Typer) -> None:
    """Attach ``synth``, ``show`` and ``stats`` to the ``quill data`` group."""
    data_app.command("synth")(synth_command)
    data_app.command("show")(show_command)
    data_app.command("stats")(stats_command)
