"""`quill lm fit|tune|language` with bad input: refused before the work (counting n-grams,
running the model over every tuning line), in one message, with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app


def refused(*args: str) -> str:
    """The output of a refused command (exit 2, no traceback), its whitespace collapsed (a
    usage error is drawn in a box)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--weights=-1,abc", "--weights: expected numbers of at least 0"),
        ("--weights=-5", "--weights: expected numbers of at least 0"),
        ("--weights=", "--weights: expected numbers of at least 0"),
        ("--bonuses=nan", "--bonuses: expected finite numbers"),
        ("--prunes=0", "--prunes: expected negative numbers"),
        ("--beam=2.5", "--beam: expected whole numbers of at least 2"),
        ("--rank-gaps=0", "--rank-gaps: rank gaps must be 'none' or positive numbers"),
    ],
)
def test_tune_checks_its_options_before_loading_the_model(
    tmp_path: Path, option: str, expected: str
) -> None:
    # neither the model nor the data exist: the option is refused before either is read
    output = refused("lm", "tune", str(tmp_path / "model"), "--data", str(tmp_path), option)
    assert expected in output


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--weights=-1", "--weights: expected numbers of at least 0"),
        ("--margins=-1,x", "--margins: expected finite numbers"),
    ],
)
def test_language_checks_its_options_before_loading_the_model(
    tmp_path: Path, option: str, expected: str
) -> None:
    lm = tmp_path / "lm.json"
    lm.write_text("{}")
    args = ["--language", "fr", "--lm", str(lm), "--identify", str(lm), "--data", str(tmp_path)]
    assert expected in refused("lm", "language", str(tmp_path / "model"), *args, option)
    missing = refused("lm", "language", str(tmp_path / "model"), *args[:2], "--lm", "nope.json",
                      *args[4:])  # fmt: skip
    assert "'nope.json' does not exist" in missing


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("hello world\nthe quick brown fox\n", encoding="utf-8")
    return path


def test_fit_refuses_an_output_it_cannot_write_before_counting(tmp_path: Path, text: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    for out, expected in [
        (tmp_path, f"OUT {tmp_path}: is a folder; give a file name"),
        (a_file / "lm.json", f"{a_file} is a file, not a folder"),
        # permission bits let root write anywhere: /proc takes no file all the same
        (Path("/proc/lm.json"), "cannot write in /proc"),
    ]:
        output = refused("lm", "fit", str(out), "--text", str(text), "--no-corpus")
        assert output.startswith("error: ") and expected in output


def test_fit_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "lm.json"
    output = refused("lm", "fit", str(out), "--text", str(binary), "--no-corpus")
    assert f"error: {binary} is not UTF-8 text" in output
    assert not out.exists()


def test_fit_reads_utf8_text_with_a_byte_order_mark(tmp_path: Path) -> None:
    text = tmp_path / "bom.txt"
    text.write_text("héllo wörld\n", encoding="utf-8-sig")
    out = tmp_path / "lm.json"
    result = CliRunner().invoke(
        app, ["lm", "fit", str(out), "--text", str(text), "--no-corpus", "--vocabulary", "latin"]
    )
    assert result.exit_code == 0, result.output
    assert "outside the" not in result.output and out.is_file()


def test_fit_makes_the_folders_its_output_needs(tmp_path: Path, text: Path) -> None:
    out = tmp_path / "new" / "deeper" / "lm.json"
    result = CliRunner().invoke(app, ["lm", "fit", str(out), "--text", str(text), "--no-corpus"])
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_fit_on_a_text_with_no_line_says_so(tmp_path: Path) -> None:
    """It said "give --text, --dataset or keep --corpus" to someone who gave --text."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    output = refused("lm", "fit", str(tmp_path / "lm.json"), "--text", str(empty), "--no-corpus")
    assert "no text to fit: the --text and --dataset given hold no line" in output
    output = refused("lm", "fit", str(tmp_path / "lm.json"), "--no-corpus")  # was garbled
    assert "no text to fit: --no-corpus, and no --text or --dataset given" in output


def test_fit_never_writes_into_a_staged_model(
    smoke_model: Path, tmp_path: Path, text: Path
) -> None:
    """`quill lm fit MODEL/lm.json` replaced a staged model's tuned LM without a word: the
    model then read differently under the same model version."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    out = model / "lm.json"
    before = out.read_bytes() if out.exists() else None
    output = refused("lm", "fit", str(out), "--text", str(text), "--no-corpus")
    assert f"error: {out} is in the staged model {model}" in output
    assert (out.read_bytes() if out.exists() else None) == before


def test_fit_reads_its_evaluation_folders_before_writing(tmp_path: Path, text: Path) -> None:
    """A folder given to --evaluate that is not a dataset failed after OUT was written."""
    out, empty = tmp_path / "lm.json", tmp_path / "empty"
    empty.mkdir()
    refused("lm", "fit", str(out), "--text", str(text), "--no-corpus", "--evaluate", str(empty))
    assert not out.exists()
