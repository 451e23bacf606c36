"""Folder reader (labels.tsv): in-place references, page splits, the real Hooker lines."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from quill.data.manifest import Manifest, file_sha256
from quill.data.readers.common import DatasetError
from quill.data.readers.folder import read_folder


def test_images_are_referenced_in_place(folder_dataset: Path, tmp_path: Path):
    out = tmp_path / "data" / "mine"
    result = read_folder(folder_dataset, out)
    assert result.report.total_loaded == 6 and not result.report.skipped
    manifest = Manifest.load(out)
    for sample in manifest:
        path = manifest.path_of(sample)
        assert path == (folder_dataset / sample.meta["file"]).resolve()
        assert file_sha256(path) == sample.sha256
        assert sample.text == f"{sample.group} line {sample.image[-5]}"
    assert not any((out / "images").iterdir())


def test_copy_puts_images_inside_the_dataset(folder_dataset: Path, tmp_path: Path):
    out = tmp_path / "copied"
    manifest = read_folder(folder_dataset, out, copy=True).manifest
    assert all(s.image.startswith("images/") for s in manifest)
    assert all(manifest.path_of(s).is_relative_to(out.resolve()) for s in manifest)


def test_split_and_kind_columns(folder_dataset: Path, tmp_path: Path):
    labels = folder_dataset / "labels.tsv"
    rows = labels.read_text().splitlines()
    rows[0] += "\tsplit\tkind"
    rows[1:] = [f"{row}\ttest\tline" for row in rows[1:]]
    rows[1] = rows[1].replace("\tline", "\tparagraph").replace("line 0", "line\\n0")
    labels.write_text("\n".join(rows) + "\n")
    manifest = read_folder(folder_dataset, tmp_path / "out").manifest
    assert {s.split for s in manifest} == {"test"}
    paragraph = next(s for s in manifest if s.kind == "paragraph")
    assert paragraph.text == "p1 line\n0"


def _hooker_subset(hooker_dir: Path, tmp_path: Path, pages: int) -> Path:
    """labels.tsv with absolute paths for a few random Hooker pages (fast to import)."""
    rows = (hooker_dir / "labels.tsv").read_text(encoding="utf-8").splitlines()
    by_page = defaultdict(list)
    for row in rows[1:]:
        file, page, text = row.split("\t")
        by_page[page].append(f"{hooker_dir / file}\t{page}\t{text}")
    chosen = random.Random(0).sample(sorted(by_page), pages)
    labels = tmp_path / "subset" / "labels.tsv"
    labels.parent.mkdir()
    labels.write_text("\n".join([rows[0], *(r for p in chosen for r in by_page[p])]) + "\n")
    return labels


def test_real_hooker_lines_split_by_page(hooker_dir: Path, tmp_path: Path):
    labels = _hooker_subset(hooker_dir, tmp_path, pages=25)
    manifest = read_folder(labels, tmp_path / "hooker").manifest
    split_of_page = defaultdict(set)
    for sample in manifest:
        split_of_page[sample.group].add(sample.split)
        assert manifest.path_of(sample).is_relative_to(hooker_dir.resolve())
    assert len(split_of_page) == 25
    assert all(len(splits) == 1 for splits in split_of_page.values())
    assert {"train", "val", "test"} >= {s.split for s in manifest}
    assert manifest.counts()["train"] > len(manifest) / 2


@pytest.mark.slow
def test_whole_hooker_folder_imports(hooker_dir: Path, tmp_path: Path):
    result = read_folder(hooker_dir, tmp_path / "hooker")
    rows = (hooker_dir / "labels.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert result.report.total_loaded + len(result.report.skipped) == len(rows)
    assert all("outside the vocabulary" in s.reason for s in result.report.skipped)
    assert set(result.manifest.counts()) == {"train", "val", "test"}
    again = read_folder(hooker_dir, tmp_path / "again").manifest
    assert again.version == result.manifest.version


def test_missing_folder_and_labels(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found: .*nothing-here"):
        read_folder(tmp_path / "nothing-here", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no labels.tsv"):
        read_folder(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "empty" / "labels.tsv").write_text("a.png\thello\n")
    with pytest.raises(DatasetError, match="header"):
        read_folder(tmp_path / "empty", tmp_path / "out")
