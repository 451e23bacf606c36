"""What the dataset-making commands do with --out: refuse a dataset already there unless
--overwrite (which removes it whole), refuse their own source, leave nothing but the report
when nothing is imported, refuse an output that cannot be written before any work, and
print follow-up commands a shell can run."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import MANIFEST_NAME, REPORT_NAME, Manifest, file_sha256
from quill.data.readers.common import DatasetWriter
from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED

from .conftest import draw_page

runner = CliRunner()
TEXTS = {"train": [f"train line {i}" for i in range(4)], "val": ["val one", "val two"]}


def _quill(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _import(src: Path, out: Path, *options: str) -> tuple[int, str]:
    return _quill("data", "import", "folder", src, "--out", out, *options)


def test_import_refuses_a_dataset_in_out_unless_overwrite(folder_dataset: Path, tmp_path: Path):
    out = tmp_path / "ds"
    assert _import(folder_dataset, out, "--copy")[0] == 0
    copied = sorted((out / "images").iterdir())
    version = Manifest.load(out).version

    code, output = _import(folder_dataset, out, "--kinds", "line")
    assert code == EXIT_ERROR, output
    assert f"{out} already holds a dataset: use --overwrite to replace it" in output
    assert Manifest.load(out).version == version and sorted((out / "images").iterdir()) == copied

    code, output = _import(folder_dataset, out, "--overwrite")  # in place this time
    assert code == 0, output
    assert not (out / "images").exists() or not any((out / "images").iterdir())  # no orphans
    assert all((folder_dataset / "lines" / p.name).is_file() for p in copied)
    assert len(Manifest.load(out)) == len(copied)


def test_overwrite_keeps_the_source_the_old_dataset_referenced(tmp_path: Path):
    """The old dataset referenced its images in place (no --copy) under out/images: they are
    the new import's source, never the old dataset's to delete."""
    out = tmp_path / "ds"
    src = out / "images"
    src.mkdir(parents=True)
    draw_page(["kept"], size=(200, 60), origin=(10, 10))[0].save(src / "kept.png")
    (src / "labels.tsv").write_text("file\ttext\nkept.png\tkept\n")
    assert _import(src, out)[0] == 0
    code, output = _import(src, out, "--overwrite")
    assert code == 0, output
    assert (src / "kept.png").is_file() and len(Manifest.load(out)) == 1


def test_paragraphs_refuse_their_own_source_and_an_existing_dataset(make_line_dataset, tmp_path):
    lines = make_line_dataset("lines", TEXTS)
    version = lines.version
    root = lines.root
    for src, out in ((root, root), (root / MANIFEST_NAME, root)):
        code, output = _quill(
            "data", "paragraphs", src, "-o", out, "-n", "2", "--workers", "1", "--overwrite"
        )
        assert code == EXIT_ERROR, output
        assert f"--out {out}: is the source folder {root.resolve()}" in output
    assert Manifest.load(root).version == version

    out = tmp_path / "para"
    args = ("data", "paragraphs", lines.root, "-o", out, "--workers", "1")
    assert _quill(*args, "-n", "4")[0] == 0
    code, output = _quill(*args, "-n", "2")
    assert code == EXIT_ERROR and "already holds a dataset" in output
    assert len(Manifest.load(out)) == 4
    code, output = _quill(*args, "-n", "2", "--overwrite")
    assert code == 0, output
    assert len(Manifest.load(out)) == 2 == len(list((out / "images").iterdir()))


def test_a_refused_import_leaves_only_its_report(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "labels.tsv").write_text("file\ttext\nabsent.png\thello\n")
    out = tmp_path / "out"
    code, output = _import(src, out)
    assert code == EXIT_FAILED, output
    assert "nothing imported: no dataset written to" in output
    assert sorted(p.name for p in out.iterdir()) == [REPORT_NAME]
    report = json.loads((out / REPORT_NAME).read_text())
    assert "image file not found" in report["skipped"][0]["reason"]
    assert _import(src, out)[0] == EXIT_FAILED  # no dataset in the way of a second try


def test_paragraphs_that_fail_midway_leave_no_folder(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    lines.path_of(lines.split("val")[0]).write_bytes(b"not a png")
    out = tmp_path / "para"
    code, output = _quill("data", "paragraphs", lines.root, "-o", out, "-n", "4", "--workers", "1")
    assert code == EXIT_ERROR and "readable line(s)" in output
    assert not out.exists()


def test_outputs_that_cannot_be_written_are_refused_first(folder_dataset: Path, tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, output = _import(folder_dataset, a_file / "x")
    assert code == EXIT_ERROR and f"--out {a_file / 'x'}: {a_file} is a file" in output
    code, output = _import(folder_dataset, a_file)
    assert code == EXIT_ERROR and "is a file, not a folder" in output
    assert "Traceback" not in output and a_file.read_text() == "x"

    dataset = tmp_path / "ds"
    assert _import(folder_dataset, dataset)[0] == 0
    for out, problem in ((dataset, "is a folder; give a file name"), (a_file / "s.png", "file")):
        code, output = _quill("data", "show", dataset, "--out", out, "-n", "1")
        assert code == EXIT_ERROR and f"--out {out}: " in output and problem in output


def test_synth_says_a_corpus_is_not_utf8(tmp_path: Path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("Le café était servi dans la grande salle.\n".encode("latin-1"))
    code, output = _quill("data", "synth", "--corpus", corpus, "-o", tmp_path / "s", "-n", "1")
    assert code == EXIT_ERROR, output
    assert f"{corpus} is not UTF-8 text (byte 6: invalid continuation byte)" in output


def test_synth_quotes_the_paths_of_its_suggestion(tmp_path: Path):
    out = tmp_path / "sy nth" / "ü lines"
    code, output = _quill("data", "synth", "-o", out, "-n", "1", "--workers", "1")
    assert code == 0, output
    # the suggestion as printed, read back as a shell reads it, then run as it reads
    (line,) = [line for line in output.splitlines() if "quill data show" in line]
    command = shlex.split(line.partition("Look at them: ")[2])
    assert command == ["quill", "data", "show", str(out), "--out", str(out / "sheet.png")]
    code, shown = _quill(*command[1:])
    assert code == 0, shown
    assert (out / "sheet.png").is_file()


def _scratch_left(out: Path) -> list[str]:
    """Scratch folders of an import left beside ``out``."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_an_overwrite_that_imports_nothing_keeps_the_old_dataset(
    folder_dataset: Path, tmp_path: Path
):
    out = tmp_path / "ds"
    assert _import(folder_dataset, out, "--copy")[0] == 0
    old = Manifest.load(out)
    report = (out / REPORT_NAME).read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.tsv").write_text("file\ttext\n")

    code, output = _import(empty, out, "--overwrite", "--copy")
    assert code == EXIT_FAILED, output
    assert "labels.tsv has no rows below its header" in output
    assert f"nothing imported: the dataset already in {out} is left as it was" in output
    assert Manifest.load(out).version == old.version
    assert all(old.path_of(s).is_file() for s in old) and len(old) == 6
    assert (out / REPORT_NAME).read_text() == report and not _scratch_left(out)


def test_an_overwrite_may_read_the_old_datasets_own_images(folder_dataset: Path, tmp_path: Path):
    """Imported with --copy, originals deleted, the copies re-imported into the same folder:
    they are the new source, and the old dataset's to delete only once they are not."""
    out = tmp_path / "ds"
    assert _import(folder_dataset, out, "--copy")[0] == 0
    shutil.rmtree(folder_dataset / "lines")
    again = tmp_path / "again"
    again.mkdir()
    rows = [f"{out / s.image}\t{s.text}" for s in Manifest.load(out)]
    (again / "labels.tsv").write_text("file\ttext\n" + "\n".join(rows) + "\n")

    code, output = _import(again, out, "--overwrite")
    assert code == 0, output
    manifest = Manifest.load(out)
    assert len(manifest) == 6 and all(s.image.startswith("images/") for s in manifest)
    assert all(file_sha256(manifest.path_of(s)) == s.sha256 for s in manifest)
    assert not _scratch_left(out)


def test_an_interrupted_overwrite_keeps_the_old_dataset(
    folder_dataset: Path, tmp_path: Path, monkeypatch
):
    out = tmp_path / "ds"
    assert _import(folder_dataset, out, "--copy")[0] == 0
    old = Manifest.load(out)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetWriter, "finish", interrupted)
    result = runner.invoke(app, ["data", "import", "folder", str(folder_dataset), "-o", str(out)])
    assert result.exit_code != 0 and "already holds" in result.output  # refused, untouched
    result = runner.invoke(
        app, ["data", "import", "folder", str(folder_dataset), "-o", str(out), "--overwrite"]
    )
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert Manifest.load(out).version == old.version
    assert all(old.path_of(s).is_file() for s in old) and not _scratch_left(out)


def test_synth_overwrite_swaps_in_the_new_set(tmp_path: Path):
    out = tmp_path / "synth"
    assert _quill("data", "synth", "-o", out, "-n", "2", "--workers", "1")[0] == 0
    code, output = _quill("data", "synth", "-o", out, "-n", "3", "--workers", "1", "--overwrite")
    assert code == 0, output
    manifest = Manifest.load(out)
    assert len(manifest) == 3 == len(list((out / "images").iterdir()))
    assert (out / "synth.json").is_file() and not _scratch_left(out)
