"""Contact sheets and dataset statistics, through the API and the ``quill data`` commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from quill.cli import app
from quill.data.inspect import BACKGROUND, contact_sheet, dataset_stats, print_stats
from quill.data.manifest import Manifest, Sample, file_sha256

runner = CliRunner()
WHITE, BROKEN_RED = (255, 255, 255), (200, 40, 40)


def _flat(output: str) -> str:
    """Rich wraps long lines at the terminal width; compare with the wrapping undone."""
    return " ".join(output.split())


def _write(root: Path, name: str, text: str, size: tuple[int, int]) -> Path:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((5, 5), text.split("\n")[0], fill="black")
    path = root / name
    image.save(path)
    return path


@pytest.fixture()
def dataset(tmp_path) -> Manifest:
    """A small mixed dataset (not synthetic): lines, a paragraph, a corrupt image and a
    label with a character outside the vocabulary."""
    root = tmp_path / "mixed"
    root.mkdir()
    rows = [
        ("a.png", "first line", "train", "folder", "line", (300, 40)),
        ("b.png", "second line", "train", "folder", "line", (260, 50)),
        ("c.png", "a page\nof two lines", "val", "pagexml", "paragraph", (300, 120)),
        ("d.png", "naïve café", "test", "folder", "line", (200, 30)),
    ]
    samples = []
    for name, text, split, source, kind, size in rows:
        path = _write(root, name, text, size)
        samples.append(Sample(name, text, split, source, file_sha256(path), name, kind))
    (root / "broken.png").write_bytes(b"not a png at all")
    samples.append(Sample("broken.png", "lost", "train", "folder", "x", "broken"))
    manifest = Manifest(root, samples)
    manifest.save()
    return manifest


def _tiles(sheet: Image.Image, columns: int, gap: int = 12, header: int = 40) -> list[list]:
    """Per column of a contact sheet, the tiles down it below the header, each as (height,
    colours) along a line 2 px inside the column's left edge: the sheet's background lies
    between tiles, never inside one (an image, white paper or red if unreadable, above its
    white caption)."""
    pixels = sheet.convert("RGB")
    column_width = (sheet.width - gap * (columns + 1)) // columns
    found = []
    for column in range(columns):
        x = gap + column * (column_width + gap) + 2
        tiles: list[tuple[int, set]] = []
        inside = False
        for y in range(header, sheet.height):
            colour = pixels.getpixel((x, y))
            if colour == BACKGROUND:
                inside = False
            elif inside:
                tiles[-1] = (tiles[-1][0] + 1, tiles[-1][1] | {colour})
            else:
                tiles.append((1, {colour}))
                inside = True
        found.append(tiles)
    return found


def test_contact_sheet_shows_every_sample_and_survives_a_broken_image(dataset, tmp_path):
    out = contact_sheet(dataset, tmp_path / "sheets" / "sheet.png", n=24, columns=2, width=800)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.width == 800
        columns = _tiles(sheet, columns=2)
    # All five samples, filled row by row into two columns: three tiles down the first, two
    # down the second.
    assert len(dataset) == 5 and [len(tiles) for tiles in columns] == [3, 2]
    tiles = [tile for column in columns for tile in column]
    # each an image (the smallest: a 48 px red tile) above a caption (48 px for one line)
    assert all(height >= 96 for height, _ in tiles)
    # the unreadable image is drawn as one red tile; the others show their white paper
    assert sorted(BROKEN_RED in colours for _, colours in tiles) == [False] * 4 + [True]
    assert all(WHITE in colours for _, colours in tiles)


def test_contact_sheet_picks_a_fixed_subset(dataset, tmp_path):
    one = contact_sheet(dataset, tmp_path / "one.png", n=2, seed=1)
    two = contact_sheet(dataset, tmp_path / "two.png", n=2, seed=1)
    assert one.read_bytes() == two.read_bytes()
    with pytest.raises(ValueError, match="no samples"):
        contact_sheet(dataset, tmp_path / "none.png", split="nonexistent")


def test_stats_count_measure_and_report_problems(dataset):
    stats = dataset_stats(dataset)
    assert stats.total == 5
    assert stats.groups[("train", "folder", "line")] == 3
    assert stats.groups[("val", "pagexml", "paragraph")] == 1
    assert sorted(stats.widths) == [200, 260, 300, 300]
    assert stats.heights == [40, 50, 120, 30]
    assert len(stats.unreadable) == 1 and "broken.png" in stats.unreadable[0]
    assert stats.unknown_characters == {"ï": 1, "é": 1}
    assert stats.characters["\n"] == 1 and stats.lines_per_sample == {1: 4, 2: 1}


def test_print_stats_renders_tables(dataset):
    from rich.console import Console

    console = Console(record=True, width=120)
    print_stats(dataset_stats(dataset), console, top=5)
    text = console.export_text()
    assert "5 samples" in text and "pagexml" in text
    assert "image width (px)" in text and "Characters" in text
    assert "outside the vocabulary" in text and "unreadable image" in text


def test_cli_synth_show_stats_end_to_end(tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["data", "synth", "--out", str(out), "--n", "4", "--workers", "1", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"Wrote 4 line images .* images/s", _flat(result.output))
    assert len(Manifest.load(out)) == 4

    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["data", "show", str(out), "--out", str(sheet), "--n", "4"])
    assert result.exit_code == 0, result.output
    with Image.open(sheet) as image:
        assert image.width == 1600 and image.height > 200

    result = runner.invoke(app, ["data", "stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and "Characters" in result.output

    again = runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "4"])
    assert again.exit_code == 2 and "already holds a dataset" in _flat(again.output)


def test_cli_reports_a_missing_dataset(tmp_path):
    for command in (["show", str(tmp_path / "nope"), "--out", str(tmp_path / "s.png")],
                    ["stats", str(tmp_path / "nope")]):  # fmt: skip
        result = runner.invoke(app, ["data", *command])
        assert result.exit_code == 2
        assert "no dataset" in _flat(result.output)
