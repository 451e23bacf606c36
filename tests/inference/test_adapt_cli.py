"""``quill adapt``: a folder of one writer's lines in, a staged model of that hand out, read
before and after on held-out lines; lines it cannot use are named and nothing is written."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Literal

from rich.console import Console
from typer.testing import CliRunner, Result

from quill.cli import app
from quill.data.manifest import Manifest, Sample, file_sha256
from quill.inference.adapt_cli import read_adapt_lines
from quill.inference.recognizer import Recognizer
from quill.staged_model import StagedModel
from quill.staging.parity import render_line
from quill.staging.smoke import on_noisy_paper

WORD = "wink"  # never read by the smoke model
#: Settings that teach the tiny smoke model a word (the defaults suit real models).
FAST = ("--steps", "60", "--learning-rate", "3e-3")


def _adapt(lines: Path, model: Path, out: Path, *options: str) -> Result:
    return CliRunner().invoke(
        app, ["adapt", str(lines), "--model", str(model), "--out", str(out), *options]
    )


def _folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    root.mkdir()
    for index, (file, text) in enumerate(rows):
        if file.endswith(".png"):
            on_noisy_paper(render_line(text), seed=index).save(root / file)
    lines = "".join(f"{file}\t{text}\n" for file, text in rows)
    (root / "labels.tsv").write_text("file\ttext\n" + lines, encoding="utf-8")
    return root


def test_adapted_model_reads_the_writer_and_decodes_as_its_base(
    smoke_model: Path, tmp_path: Path
) -> None:
    lines = _folder(tmp_path / "mine", [(f"{i}.png", WORD) for i in range(5)])
    out = tmp_path / "my-hand"
    result = _adapt(lines, smoke_model, out, "--hold-out", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert f"-> {out} (4 lines, 60 steps" in result.output
    assert "your 1 held-out lines" in result.output and "after 0.0%" in result.output
    assert "adapting on 4 lines: on unseen writers" in " ".join(result.output.split())
    base, adapted = StagedModel.load(smoke_model), StagedModel.load(out)
    assert adapted.version != base.version and adapted.tokenizer == base.tokenizer
    assert adapted.decoding == base.decoding
    assert base.version in (adapted.lineage.initialised_from or "")
    card = adapted.card_path.read_text()
    assert "## Adapted to one writer" in card
    assert "1 of the writer's lines were kept out" in card and "0.0% adapted" in card
    (prediction,) = Recognizer.from_path(out).predict([render_line(WORD)], kind="line")
    assert prediction.text == WORD


def test_unusable_lines_are_named_and_nothing_is_written(smoke_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    ok = [("0.png", "ink"), ("1.png", "Kew")]
    missing = _folder(tmp_path / "missing", [*ok, ("gone.png_", "ink")])
    unwritable = _folder(tmp_path / "unwritable", [*ok, ("2.png", "ink☃")])
    truncated = _folder(tmp_path / "truncated", [*ok, ("2.png", "ink")])
    too_few = _folder(tmp_path / "too-few", ok)
    (truncated / "2.png").write_bytes((truncated / "2.png").read_bytes()[:60])
    for folder, message in (
        (missing, "gone.png_): image file not found"),
        (unwritable, "2.png: '☃'"),
        (truncated, "images that cannot be read: 2.png:"),
        (too_few, "2 line(s) are too few to adapt on"),
    ):
        result = _adapt(folder, smoke_model, out)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    assert "adapting on" not in result.output  # too few: refused, not first announced
    result = _adapt(truncated, smoke_model, out, "--hold-out", "1")  # read before adapting
    assert result.exit_code == 2, result.output
    assert "a held-out line cannot be read" in " ".join(result.output.split())
    # a learning rate that blows the weights up used to stage a model reading NaN
    good = _folder(tmp_path / "good", [*ok, ("2.png", "ink")])
    result = _adapt(good, smoke_model, out, "--steps", "5", "--learning-rate", "1e9")
    assert result.exit_code == 2, result.output
    assert "fine-tuning diverged at step" in " ".join(result.output.split())
    assert not out.exists()


def test_the_base_model_and_other_folders_are_never_written_over(
    smoke_model: Path, tmp_path: Path
) -> None:
    """Staging replaces its folder whole: --out as the base model's own folder, a folder
    holding it or inside it, or a folder of other things is refused before any work, and all
    are kept."""
    lines = _folder(tmp_path / "lines", [("0.png", WORD), ("1.png", WORD)])
    base = Path(shutil.copytree(smoke_model, tmp_path / "models" / "base"))
    before = sorted(path.name for path in base.iterdir())
    for out, message in (
        (base, "which staging reads from"),
        (base.parent, "which staging reads from"),
        (base / "mine", "is inside"),  # was written there, to go when the base is restaged
        (lines, "is not empty and is not a staged model"),
    ):
        result = _adapt(lines, base, out)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    assert sorted(path.name for path in base.iterdir()) == before
    assert (lines / "labels.tsv").is_file() and (lines / "0.png").is_file()


def test_a_dataset_of_corrections_gives_its_line_samples(tmp_path: Path) -> None:
    """A Quill dataset (what `quill monitor feedback-dataset` writes) is read by its manifest:
    its line samples in order, a paragraph sample left out with a note."""
    root = tmp_path / "feedback"
    (root / "images").mkdir(parents=True)
    samples = []
    entries: list[tuple[str, Literal["line", "paragraph"]]] = [(WORD, "line"), ("Kew", "line")]
    for index, (text, kind) in enumerate([*entries, ("ink\nKew", "paragraph")]):
        image = root / "images" / f"{index}.png"
        on_noisy_paper(render_line(text.replace("\n", " ")), seed=index).save(image)
        samples.append(
            Sample(f"images/{index}.png", text, "train", "feedback", file_sha256(image), kind=kind)
        )
    Manifest(root, samples).save()
    printed = io.StringIO()
    lines = read_adapt_lines(root, Console(file=printed, width=200))
    assert [(path.name, text) for path, text in lines] == [("0.png", WORD), ("1.png", "Kew")]
    assert "1 paragraph sample(s) left out" in printed.getvalue()


def test_labels_are_read_as_an_import_reads_them(tmp_path: Path) -> None:
    """A label typed on a Mac or copied from a PDF holds a decomposed é (e + U+0301): adapt
    refused every line for the bare accent, though the model writes é, and a label's extra
    spaces were read as text the model missed (the held-out CER 33% of a perfect reading)."""
    lines = _folder(tmp_path / "mine", [("0.png", "cafe\u0301"), ("1.png", "  Kew ")])
    read = read_adapt_lines(lines, Console(file=io.StringIO()))
    assert [text for _, text in read] == ["caf\u00e9", "Kew"]
