"""The import commands as a user runs them: `quill data import|paragraphs|manifest|download`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest

from .conftest import PageFixture, draw_page

runner = CliRunner()


def test_import_prints_report_version_and_splits(pagexml_page: PageFixture, tmp_path: Path):
    (pagexml_page.root / "other.xml").write_text("<mets/>")
    out = tmp_path / "data" / "pages"
    result = runner.invoke(
        app, ["data", "import", "pagexml", str(pagexml_page.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    version = Manifest.load(out).version
    assert "loaded 5 samples (3 line, 2 paragraph)" in result.output
    assert "other.xml: not a PAGE XML file" in result.output
    assert f"version {version}" in result.output
    assert "import-report.json" in result.output


def test_import_kinds_and_errors(pagexml_page: PageFixture, tmp_path: Path):
    out = tmp_path / "lines-only"
    args = ["data", "import", "pagexml", str(pagexml_page.root), "--out", str(out)]
    assert runner.invoke(app, [*args, "--kinds", "line"]).exit_code == 0
    assert {s.kind for s in Manifest.load(out)} == {"line"}
    bad = runner.invoke(app, [*args, "--kinds", "words"])
    assert bad.exit_code == 2 and "--kinds" in bad.output
    missing = runner.invoke(
        app, ["data", "import", "alto", str(tmp_path / "gone"), "--out", str(out)]
    )
    assert missing.exit_code == 2
    assert "alto source not found" in missing.output and "gone" in missing.output


def test_nothing_loaded_is_a_failure(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "labels.tsv").write_text("file\ttext\nabsent.png\thello\n")
    result = runner.invoke(
        app, ["data", "import", "folder", str(tmp_path / "src"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "loaded 0 samples" in result.output and "image file not found" in result.output


def test_folder_import_split_by_and_vocabulary(tmp_path: Path):
    src = tmp_path / "hands"
    (src / "lines").mkdir(parents=True)
    rows = ["file\tpage\ttext"]
    for index, (page, text) in enumerate(
        [("w1__a", "Fédération"), ("w1__b", "du Laos"), ("w2__a", "grec : π"), ("w3__c", "fin")]
    ):
        draw_page([text], size=(300, 60), origin=(10, 10))[0].save(src / "lines" / f"{index}.png")
        rows.append(f"lines/{index}.png\t{page}\t{text}")
    (src / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    base = ["data", "import", "folder", str(src)]

    plain = runner.invoke(app, [*base, "--out", str(tmp_path / "ascii")])
    assert plain.exit_code == 0, plain.output
    assert "loaded 2 samples" in plain.output
    assert (
        "hint: 1 line was skipped for characters the latin vocabulary has (é); "
        "import with --vocabulary latin to keep them"
    ) in " ".join(plain.output.split())
    assert {s.group for s in Manifest.load(tmp_path / "ascii")} == {"w1", "w3"}  # auto: writer

    latin = runner.invoke(app, [*base, "--out", str(tmp_path / "latin"), "--vocabulary", "latin"])
    assert latin.exit_code == 0, latin.output
    assert "loaded 3 samples" in latin.output and "'π'" in latin.output
    assert "hint:" not in latin.output

    by_page = runner.invoke(app, [*base, "--out", str(tmp_path / "pages"), "--split-by", "page"])
    assert {s.group for s in Manifest.load(tmp_path / "pages")} == {"w1__b", "w3__c"}
    assert by_page.exit_code == 0

    (src / "labels.tsv").write_text("\n".join([*rows, "lines/3.png\tloose\tend"]) + "\n")
    strict = runner.invoke(app, [*base, "--out", str(tmp_path / "w"), "--split-by", "writer"])
    assert strict.exit_code == 2 and "use --split-by page" in " ".join(strict.output.split())
    layout = runner.invoke(
        app,
        ["data", "import", "pagexml", str(src), "--out", str(tmp_path / "x"), "--split-by", "page"],
    )
    assert layout.exit_code == 2 and "--split-by" in layout.output


def test_paragraphs_and_manifest_commands(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", {"train": [f"l{i}" for i in range(5)], "val": ["v1", "v2"]})
    out = tmp_path / "para"
    made = runner.invoke(
        app, ["data", "paragraphs", str(lines.root), "--out", str(out), "--n", "4", "--seed", "2"]
    )
    assert made.exit_code == 0, made.output
    assert "loaded 4 samples (4 paragraph)" in made.output
    shown = runner.invoke(app, ["data", "manifest", str(out)])
    assert shown.exit_code == 0
    assert Manifest.load(out).version in shown.output
    assert "lines-paragraphs" in shown.output and "paragraph" in shown.output
    nothing = runner.invoke(app, ["data", "manifest", str(tmp_path / "nope")])
    assert nothing.exit_code == 2 and "no dataset at" in nothing.output


def test_download_without_credentials_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("IAM_USERNAME", raising=False)
    monkeypatch.delenv("IAM_PASSWORD", raising=False)
    result = runner.invoke(app, ["data", "download", "iam", "--to", str(tmp_path / "iam")])
    assert result.exit_code == 2
    assert "IAM_USERNAME" in result.output and "register" in result.output
