"""Look at a dataset: a contact sheet a person can check by eye, and summary statistics.

Both work on any dataset folder with a ``manifest.jsonl``, whatever made it (synthesis,
IAM, PAGE XML, a labels.tsv folder). An image that cannot be read is drawn as a red tile
naming the problem and counted in the statistics; it never stops the rest.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from quill.data.manifest import Manifest, Sample, choose
from quill.vocab import Tokenizer

LABEL_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
BACKGROUND = (236, 236, 236)


def _label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans when installed (it has every vocabulary glyph), else Pillow's own."""
    if LABEL_FONT.is_file():
        return ImageFont.truetype(str(LABEL_FONT), size)
    return ImageFont.load_default(size)


def _open_tile(path: Path, width: int, max_height: int) -> tuple[Image.Image, str | None]:
    """The image scaled to fit (width, max_height), or a red tile and the reason."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        tile = Image.new("RGB", (width, 48), (200, 40, 40))
        reason = f"cannot read {path.name}: {exc}"
        ImageDraw.Draw(tile).text((6, 14), reason[:120], fill="white", font=_label_font(14))
        return tile, reason
    scale = min(width / image.width, max_height / image.height, 2.0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), None


def _caption(sample: Sample, width: int, font, small) -> Image.Image:
    """The label as text under the image (wrapped), then split, source and group in grey."""
    per_line = max(20, int(width / (font.size * 0.55)))
    lines = []
    for line in sample.text.split("\n") or [""]:
        lines.extend(textwrap.wrap(line, per_line) or [""])
    info = f"{sample.split} · {sample.source} · {sample.group or '-'} · {sample.image}"
    height = 6 + len(lines) * (font.size + 4) + small.size + 8
    tile = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(tile)
    y = 4
    for line in lines:
        draw.text((6, y), line, fill=(0, 0, 0), font=font)
        y += font.size + 4
    draw.text((6, y + 2), info[: per_line * 2], fill=(110, 110, 110), font=small)
    return tile


def contact_sheet(
    manifest: Manifest,
    out: str | Path,
    n: int = 24,
    columns: int = 2,
    width: int = 1600,
    seed: int = 0,
    split: str | None = None,
) -> Path:
    """Write a PNG of ``n`` samples in ``columns`` columns, each image above its label.

    The sheet is ``width`` pixels wide; its height follows from the tiles. Returns ``out``.
    """
    samples = choose([s for s in manifest if split is None or s.split == split], n, seed)
    if not samples:
        raise ValueError(
            f"{manifest.root}: no samples to show" + (f" in split {split}" if split else "")
        )
    gap = 12
    column_width = (width - gap * (columns + 1)) // columns
    font, small = _label_font(18), _label_font(12)
    tiles = []
    for sample in samples:
        max_height = 420 if sample.kind == "paragraph" else 160
        image, _ = _open_tile(manifest.path_of(sample), column_width, max_height)
        caption = _caption(sample, column_width, font, small)
        tile = Image.new("RGB", (column_width, image.height + caption.height), "white")
        tile.paste(image, (0, 0))
        tile.paste(caption, (0, image.height))
        tiles.append(tile)
    # Fill columns row by row; each row is as tall as its tallest tile.
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    header = 40
    height = header + sum(max(t.height for t in row) + gap for row in rows) + gap
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    title = (
        f"{manifest.root.name}: {len(samples)} of {len(manifest)} samples"
        f" · version {manifest.version}"
    )
    ImageDraw.Draw(sheet).text((gap, 10), title, fill=(40, 40, 40), font=_label_font(20))
    y = header
    for row in rows:
        for column, tile in enumerate(row):
            sheet.paste(tile, (gap + column * (column_width + gap), y))
        y += max(t.height for t in row) + gap
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


@dataclass
class DatasetStats:
    """What ``quill data stats`` reports."""

    total: int
    version: str
    groups: Counter = field(default_factory=Counter)  # (split, source, kind) -> count
    characters: Counter = field(default_factory=Counter)
    unknown_characters: Counter = field(default_factory=Counter)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    text_lengths: list[int] = field(default_factory=list)
    lines_per_sample: Counter = field(default_factory=Counter)
    distinct_groups: dict[str, int] = field(default_factory=dict)  # split -> groups
    unreadable: list[str] = field(default_factory=list)
    empty_labels: int = 0


def dataset_stats(manifest: Manifest, tokenizer: Tokenizer | None = None) -> DatasetStats:
    """Count and measure a dataset. Image sizes come from the file headers (fast)."""
    tokenizer = tokenizer or Tokenizer()
    stats = DatasetStats(total=len(manifest), version=manifest.version)
    groups_per_split: dict[str, set[str]] = {}
    for sample in manifest:
        stats.groups[(sample.split, sample.source, sample.kind)] += 1
        stats.characters.update(sample.text)
        unknown = set(tokenizer.unknown_characters(sample.text))
        if unknown:
            stats.unknown_characters.update(c for c in sample.text if c in unknown)
        stats.text_lengths.append(len(sample.text))
        stats.lines_per_sample[sample.text.count("\n") + 1] += 1
        stats.empty_labels += not sample.text.strip()
        groups_per_split.setdefault(sample.split, set()).add(sample.group)
        try:
            with Image.open(manifest.path_of(sample)) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            stats.unreadable.append(f"{sample.image}: {exc}")
            continue
        stats.widths.append(width)
        stats.heights.append(height)
    stats.distinct_groups = {split: len(g) for split, g in sorted(groups_per_split.items())}
    return stats


def describe(values: list[int]) -> dict[str, float]:
    """min, 5th percentile, median, mean, 95th percentile and max.

    >>> describe([1, 2, 3, 4, 100])["median"]
    3.0
    """
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "p5": float(np.percentile(array, 5)),
        "median": float(np.median(array)),
        "mean": float(array.mean()),
        "p95": float(np.percentile(array, 95)),
        "max": float(array.max()),
    }


def _show(char: str) -> str:
    return {" ": "␠ (space)", "\n": "↵ (newline)"}.get(char, char)


def print_stats(stats: DatasetStats, console, top: int = 100) -> None:
    """Render ``stats`` as rich tables on ``console``."""
    from rich.table import Table

    counts = Table(title=f"{stats.total} samples · version {stats.version}")
    for name in ("split", "source", "kind"):
        counts.add_column(name)
    counts.add_column("samples", justify="right")
    counts.add_column("share", justify="right")
    for (split, source, kind), count in sorted(stats.groups.items()):
        counts.add_row(split, source, kind, str(count), f"{count / max(stats.total, 1):.1%}")
    console.print(counts)
    groups = ", ".join(f"{split}: {n}" for split, n in stats.distinct_groups.items())
    console.print(f"distinct groups (pages/writers/fonts) per split: {groups}")

    sizes = Table(title="Sizes")
    sizes.add_column("measure")
    for column in ("min", "p5", "median", "mean", "p95", "max"):
        sizes.add_column(column, justify="right")
    for name, values in (
        ("image width (px)", stats.widths),
        ("image height (px)", stats.heights),
        ("label length (chars)", stats.text_lengths),
    ):
        summary = describe(values)
        if summary:
            sizes.add_row(name, *(f"{summary[k]:.0f}" for k in summary))
    console.print(sizes)
    lines = ", ".join(f"{k}: {v}" for k, v in sorted(stats.lines_per_sample.items()))
    console.print(f"lines per label: {lines}")

    histogram = Table(title=f"Characters ({len(stats.characters)} distinct, top {top})")
    histogram.add_column("char")
    histogram.add_column("count", justify="right")
    histogram.add_column("share", justify="right")
    histogram.add_column("")
    total_chars = max(sum(stats.characters.values()), 1)
    most = stats.characters.most_common(1)[0][1] if stats.characters else 1
    for char, count in stats.characters.most_common(top):
        bar = "█" * max(1, round(30 * count / most))
        histogram.add_row(_show(char), str(count), f"{count / total_chars:.2%}", bar)
    console.print(histogram)

    if stats.unknown_characters:
        shown = ", ".join(f"{c!r}×{n}" for c, n in stats.unknown_characters.most_common())
        console.print(f"[red]characters outside the vocabulary:[/red] {shown}")
    if stats.empty_labels:
        console.print(f"[red]{stats.empty_labels} empty labels[/red]")
    for problem in stats.unreadable[:20]:
        console.print(f"[red]unreadable image[/red] {problem}")
    if len(stats.unreadable) > 20:
        console.print(f"[red]... and {len(stats.unreadable) - 20} more unreadable images[/red]")
