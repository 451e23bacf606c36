"""Make a synthetic dataset: N images and a manifest, in parallel, reproducibly.

Sample ``i`` of seed ``s`` is drawn from its own generator, ``default_rng([s, i])``, so the
dataset is the same whatever the number of workers or the order they finish in. A sample's
split is drawn first, then a font *of that split* (see :mod:`quill.data.synth.fonts`), so
validation and test images are always in hands the training images never use.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from quill.cores import usable_cores
from quill.data.manifest import IMAGE_DIR, Manifest, Sample, Split, building_dataset
from quill.data.processes import worker_context
from quill.data.synth import render
from quill.data.synth.corpus import Corpus, load_corpus
from quill.data.synth.fonts import FONTS, LoadedFont, load_fonts, npm_font_dir
from quill.errors import QuillError
from quill.vocab import Tokenizer

Kind = Literal["line", "paragraph"]
SOURCE = "synthetic"


class SynthError(QuillError, RuntimeError):
    """Synthesis cannot start (fonts or corpus missing, nothing to render)."""

    code = "synth_error"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the images besides the seed; saved next to the manifest."""

    kind: Kind = "line"
    #: Shares of samples per split; each split draws only from its own fonts.
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: Share of samples in printed (not handwriting) fonts.
    printed_fraction: float = 0.15
    #: Height of a lowercase x in pixels, drawn per sample.
    x_height: tuple[float, float] = (14.0, 24.0)
    line_chars: tuple[int, int] = (10, 60)
    paragraph_lines: tuple[int, int] = (2, 8)
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: tuple[int, int] = (75, 95)
    #: A UTF-8 text file to draw text from instead of the default corpus.
    corpus: str | None = None
    characters: str = field(default_factory=lambda: Tokenizer().characters)


@dataclass
class _Resources:
    """What every worker loads once: fonts by (split, style) and the corpus."""

    fonts: dict[tuple[str, str], list[LoadedFont]]
    corpus: Corpus


@lru_cache(maxsize=4)
def _resources(corpus: str | None, characters: str, font_dir: Path) -> _Resources:
    """Fonts and corpus, loaded once per process (and inherited by forked workers)."""
    fonts, _ = load_fonts(characters, font_dir)
    grouped: dict[tuple[str, str], list[LoadedFont]] = {}
    for font in fonts:
        grouped.setdefault((font.spec.split, font.spec.style), []).append(font)
    return _Resources(grouped, load_corpus(corpus, Tokenizer(characters)))


def _load_resources(config: SynthConfig) -> _Resources:
    return _resources(config.corpus, config.characters, npm_font_dir())


def check_resources(config: SynthConfig) -> tuple[list[LoadedFont], list[str]]:
    """Fail early, in the parent process, with a message that says how to fix it.

    Returns the fonts found and the names of registered fonts that are not installed.
    """
    fonts, absent = load_fonts(config.characters)
    handwriting = {f.spec.split for f in fonts if f.spec.style == "handwriting"}
    lacking = [split for split in ("train", "val", "test") if split not in handwriting]
    if lacking:
        raise SynthError(
            f"no handwriting font installed for split(s) {', '.join(lacking)} "
            f"({len(absent)} of {len(FONTS)} registered fonts missing): "
            "run scripts/install_fonts.sh"
        )
    _load_resources(config)
    return fonts, [spec.name for spec in absent]


def _pick_font(res: _Resources, split: str, printed: bool, rng: np.random.Generator) -> LoadedFont:
    style = "printed" if printed else "handwriting"
    choices = res.fonts.get((split, style)) or res.fonts[(split, "handwriting")]
    return choices[int(rng.integers(len(choices)))]


def _text_for(
    font: LoadedFont, res: _Resources, config: SynthConfig, rng: np.random.Generator
) -> str:
    """Corpus text this font can draw every character of (a few fonts lack e.g. "£")."""
    for _ in range(100):
        if config.kind == "line":
            text = res.corpus.line(rng, *config.line_chars)
        else:
            text = res.corpus.paragraph(rng, config.paragraph_lines, config.line_chars[1])
        if font.covers(text):
            return text
    raise SynthError(f"font {font.name} cannot draw 100 corpus snippets in a row")


@dataclass
class Rendered:
    """One drawn sample before it is encoded and written."""

    image: Image.Image
    text: str
    split: Split
    meta: dict


def render_sample(index: int, seed: int, config: SynthConfig) -> Rendered:
    """Draw sample ``index`` of ``seed``. Pure in (index, seed, config)."""
    res = _load_resources(config)
    rng = np.random.default_rng([seed, index])
    split: Split = rng.choice(["train", "val", "test"], p=np.asarray(config.split_fractions))
    font = _pick_font(res, split, bool(rng.random() < config.printed_fraction), rng)
    text = _text_for(font, res, config, rng)
    writer = render.Writer.sample(font, rng, config.x_height)
    if config.kind == "line":
        ink, _ = render.draw_line(text, writer, rng)
    else:
        ink = render.draw_paragraph(text.split("\n"), writer, rng)
    ink = render.crop_to_ink(ink, rng, margin=(0.3, 1.2), unit=writer.x_height)
    ink = render.writer_distortions(ink, writer, rng)
    image, inverted = render.to_photo(ink, rng)
    meta = {
        "index": index,
        "font": font.name,
        "style": font.spec.style,
        "inverted": inverted,
        "width": image.width,
        "height": image.height,
    }
    return Rendered(image, text, str(split), meta)  # type: ignore[arg-type]


def _encode(image: Image.Image, config: SynthConfig, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    if config.image_format == "jpg":
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _work(job: tuple[int, int, SynthConfig, str]) -> Sample:
    """Worker entry: render, encode and write one sample; return its manifest record."""
    index, seed, config, out_dir = job
    drawn = render_sample(index, seed, config)
    data = _encode(drawn.image, config, np.random.default_rng([seed, index, 1]))
    relative = f"{IMAGE_DIR}/{index:07d}.{config.image_format}"
    Path(out_dir, relative).write_bytes(data)
    return Sample(
        image=relative,
        text=drawn.text,
        split=drawn.split,
        source=SOURCE,
        sha256=hashlib.sha256(data).hexdigest(),
        group=drawn.meta["font"],
        kind=config.kind,
        meta=drawn.meta,
    )


def default_workers() -> int:
    """One worker per core this process may use."""
    return usable_cores()


def generate(
    out_dir: str | Path,
    kind: Kind = "line",
    n: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    *,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Manifest:
    """Render ``n`` samples into ``out_dir`` (images + ``manifest.jsonl`` + ``synth.json``).

    The same (seed, n, config) gives byte-identical images and the same manifest version for
    any ``workers``. ``progress`` shows a rich progress bar (the CLI turns it on). The set is
    rendered beside ``out_dir`` and moved in when done (:func:`building_dataset`), so a
    failed or interrupted run with ``overwrite`` leaves the old set whole.
    """
    if n < 1:
        raise SynthError(f"n must be at least 1, got {n}")
    config = config or SynthConfig(kind=kind)
    if config.kind != kind:
        config = replace(config, kind=kind)
    out_dir = Path(out_dir)
    fonts, absent = check_resources(config)
    with building_dataset(out_dir, overwrite) as scratch:
        (scratch / IMAGE_DIR).mkdir()
        workers = min(workers or default_workers(), n)
        jobs = [(index, seed, config, str(scratch)) for index in range(n)]
        samples = _run(jobs, workers, progress, f"Rendering {n} synthetic {kind}s")
        samples.sort(key=lambda s: s.meta["index"])
        manifest = Manifest(scratch, samples)
        manifest.save()
        _write_info(scratch, config, seed, manifest, fonts, absent)
    return Manifest(out_dir, samples)


def _run(jobs: list, workers: int, progress: bool, label: str) -> list[Sample]:
    """Run ``_work`` over ``jobs`` in ``workers`` processes (in-process for one worker)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    samples: list[Sample] = []
    with bar:
        task = bar.add_task(label, total=len(jobs))
        if workers == 1:
            results = map(_work, jobs)
            for sample in results:
                samples.append(sample)
                bar.advance(task)
            return samples
        with worker_context().Pool(workers) as pool:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            for sample in pool.imap_unordered(_work, jobs, chunksize=chunk):
                samples.append(sample)
                bar.advance(task)
    return samples


def _write_info(
    out_dir: Path,
    config: SynthConfig,
    seed: int,
    manifest: Manifest,
    fonts: list[LoadedFont],
    absent: list[str],
) -> None:
    """``synth.json``: how the dataset was made, for people and for reproducing it."""
    res = _load_resources(config)
    used = Counter(s.group for s in manifest)
    info = {
        "seed": seed,
        "count": len(manifest),
        "version": manifest.version,
        "config": asdict(config),
        "corpus": {"source": res.corpus.source, "licence": res.corpus.licence},
        "fonts": [
            {
                "name": f.name,
                "family": f.spec.family,
                "package": f.spec.package,
                "licence": f.spec.licence,
                "style": f.spec.style,
                "split": f.spec.split,
                "missing_characters": "".join(sorted(f.missing)),
                "samples": used.get(f.name, 0),
            }
            for f in fonts
        ],
        "fonts_not_installed": absent,
    }
    (out_dir / "synth.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
