"""Folder reader (labels.tsv): in-place references, page and writer splits, real lines."""

from __future__ import annotations

import random
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from quill.data.manifest import SPLITS, Manifest, assign_splits, file_sha256, split_by_writer
from quill.data.readers.common import DatasetError
from quill.data.readers.folder import read_folder, rows_only_in
from quill.vocab import Tokenizer

from .conftest import draw_page

SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
#: The documented version of the whole Hooker import (docs/datasets.md): the page split.
HOOKER_VERSION = "7a9563b9fb8d"


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
    # One writer, no writer__page ids: the page split, exactly as before writer splits. The
    # version is pinned, so an import that versions the same data differently fails here.
    assert result.manifest.version == HOOKER_VERSION
    assert result.manifest.counts() == {"train": 4541, "val": 482, "test": 467}


def test_missing_folder_and_labels(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found: .*nothing-here"):
        read_folder(tmp_path / "nothing-here", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError,
        match=r"has no labels.tsv \(header: file<TAB>text, and an optional page column\)",
    ):
        read_folder(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "empty" / "labels.tsv").write_text("a.png\thello\n")
    with pytest.raises(DatasetError, match="header"):
        read_folder(tmp_path / "empty", tmp_path / "out")


def _writers_across_splits(per_split: int) -> list[str]:
    """Writer names that assign_splits puts ``per_split`` each in train, val and test."""
    splits = assign_splits(f"hand{i}" for i in range(300))
    return [
        w
        for split in SPLITS
        for w in [w for w, s in sorted(splits.items()) if s == split][:per_split]
    ]


def _multi_writer_folder(root: Path, writers: list[str], pages: int = 3, lines: int = 2) -> Path:
    """labels.tsv as the multi-writer sets ship it: page ids ``writer__page``."""
    (root / "lines").mkdir(parents=True)
    rows = ["file\tpage\ttext"]
    for writer in writers:
        for page in range(pages):
            for line in range(lines):
                name = f"{writer}__p{page}_{line}.png"
                text = f"{writer} page {page} line {line}"
                draw_page([text], size=(420, 60), origin=(10, 10))[0].save(root / "lines" / name)
                rows.append(f"lines/{name}\t{writer}__p{page}\t{text}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_multi_writer_folder_splits_by_writer(tmp_path: Path):
    writers = _writers_across_splits(2)
    source = _multi_writer_folder(tmp_path / "hands", writers)
    # A page split would put pages of one writer on both sides: this data can tell them apart.
    by_page = assign_splits(f"{w}__p{p}" for w in writers for p in range(3))
    assert any(len({by_page[f"{w}__p{p}"] for p in range(3)}) > 1 for w in writers)

    manifest = read_folder(source, tmp_path / "out").manifest  # split_by="auto"
    assert len(manifest) == len(writers) * 3 * 2
    writers_in: dict[str, set[str]] = defaultdict(set)
    splits_of_writer: dict[str, set[str]] = defaultdict(set)
    for sample in manifest:
        writer = sample.meta["writer"]
        assert sample.group == writer and sample.meta["page"].startswith(f"{writer}__p")
        writers_in[sample.split].add(writer)
        splits_of_writer[writer].add(sample.split)
    assert set(writers_in) == set(SPLITS)
    assert not writers_in["train"] & writers_in["val"]
    assert not writers_in["train"] & writers_in["test"]
    assert not writers_in["val"] & writers_in["test"]
    assert all(len(splits) == 1 for splits in splits_of_writer.values())  # no writer straddles
    expected = assign_splits(writers)  # the writer hashed by the one split function
    assert {w: next(iter(s)) for w, s in splits_of_writer.items()} == expected
    assert split_by_writer(manifest)
    explicit = read_folder(source, tmp_path / "writer", split_by="writer").manifest
    assert explicit.samples == manifest.samples


def test_page_split_of_multi_writer_folder_on_request(tmp_path: Path):
    writers = _writers_across_splits(2)
    source = _multi_writer_folder(tmp_path / "hands", writers)
    manifest = read_folder(source, tmp_path / "out", split_by="page").manifest
    assert {s.group for s in manifest} == {f"{w}__p{p}" for w in writers for p in range(3)}
    assert all(s.meta["writer"] == s.group.split("__")[0] for s in manifest)  # still recorded
    assert not split_by_writer(manifest)  # some writer's pages now straddle splits


def test_writer_split_needs_every_page_to_name_a_writer(tmp_path: Path):
    source = _multi_writer_folder(tmp_path / "hands", ["w1", "w2"], pages=1, lines=1)
    labels = source / "labels.tsv"
    image = "lines/loose_0.png"  # its own image: a second text for one image is a conflict
    shutil.copyfile(source / "lines" / "w1__p0_0.png", source / image)
    labels.write_text(labels.read_text() + f"{image}\tloose-page\tno writer here\n")
    by_page = read_folder(source, tmp_path / "page", split_by="page").manifest
    assert {s.group for s in by_page} == {"w1__p0", "w2__p0", "loose-page"}
    assert "writer" not in next(s for s in by_page if s.group == "loose-page").meta
    with pytest.raises(DatasetError, match="1 rows are not .*'loose-page'.*--split-by page"):
        read_folder(source, tmp_path / "writer", split_by="writer")
    with pytest.raises(DatasetError, match="split_by 'font'"):
        read_folder(source, tmp_path / "font", split_by="font")  # type: ignore[arg-type]


def test_latin_vocabulary_keeps_accented_lines_and_reports_the_rest(tmp_path: Path):
    source = _multi_writer_folder(tmp_path / "hands", ["w1"], pages=1, lines=3)
    labels = source / "labels.tsv"
    rows = labels.read_text(encoding="utf-8").splitlines()
    rows[1] = rows[1].rsplit("\t", 1)[0] + "\tFédération française"
    rows[2] = rows[2].rsplit("\t", 1)[0] + "\tgrec ancien : π"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ascii_only = read_folder(source, tmp_path / "ascii")
    assert len(ascii_only.manifest) == 1 and len(ascii_only.report.skipped) == 2
    latin = read_folder(source, tmp_path / "latin", tokenizer=Tokenizer.named("latin"))
    assert "Fédération française" in {s.text for s in latin.manifest}
    (skip,) = latin.report.skipped  # π is in no vocabulary: reported, never dropped silently
    assert "characters outside the vocabulary: 'π'" in skip.reason
    ascii_, wide = Tokenizer.named("ascii"), Tokenizer.named("latin")
    assert rows_only_in(source, ascii_, wide) == (1, ["é", "ç"])


def test_real_multi_writer_lines_split_by_writer(tmp_path: Path):
    """A few real copiste writers (absolute paths): writer split, Latin labels kept."""
    copiste = SHARED_DATASETS / "copiste"
    if not (copiste / "labels.tsv").is_file():
        pytest.skip(f"real multi-writer lines not found at {copiste}")
    rows = (copiste / "labels.tsv").read_text(encoding="utf-8").splitlines()
    by_writer = defaultdict(list)
    for row in rows[1:]:
        file, page, text = row.split("\t")
        by_writer[page.split("__")[0]].append(f"{copiste / file}\t{page}\t{text}")
    chosen = random.Random(0).sample(sorted(by_writer), 30)
    labels = tmp_path / "subset" / "labels.tsv"
    labels.parent.mkdir()
    labels.write_text("\n".join([rows[0], *(r for w in chosen for r in by_writer[w])]) + "\n")
    result = read_folder(labels, tmp_path / "copiste", tokenizer=Tokenizer.named("latin"))
    manifest = result.manifest
    assert len(manifest) + len(result.report.skipped) == sum(len(by_writer[w]) for w in chosen)
    assert all("'π'" in skip.reason for skip in result.report.skipped)
    assert {s.group for s in manifest} <= set(chosen) and split_by_writer(manifest)
    splits = assign_splits(chosen)
    assert all(s.split == splits[s.group] for s in manifest)
    assert any(set(s.text) & set("éèàç") for s in manifest)


def test_rows_end_at_newlines_only(tmp_path: Path):
    """U+2028, U+0085, a form feed, a lone CR or \\x1c inside a text cut its row in two:
    the label became its first part. Now the text is whole and its character reported."""
    breaks = ["\u2028", "\x85", "\x0c", "\r", "\x1c"]
    texts = [f"before{c}after" for c in breaks] + ["last line"]
    rows = []
    for number, text in enumerate(texts):
        draw_page([f"line {number}"], size=(200, 50), origin=(10, 10))[0].save(
            tmp_path / f"{number}.png"
        )
        rows.append(f"{number}.png\t{text}")
    labels = tmp_path / "labels.tsv"
    labels.write_bytes(("file\ttext\r\n" + "\r\n".join(rows) + "\r\n").encode())
    result = read_folder(labels, tmp_path / "out")
    reasons = [(skip.where, skip.reason) for skip in result.report.skipped]
    assert [where for where, _ in reasons] == [f"labels.tsv:{n + 2} ({n}.png)" for n in range(5)]
    for (_, reason), text in zip(reasons, texts, strict=False):
        assert reason.startswith("characters outside the vocabulary") and repr(text) in reason
    assert [sample.text for sample in result.manifest] == ["last line"]


def test_auto_split_refuses_a_few_pages_without_a_writer(tmp_path: Path):
    """One typo (wC_p2 for wC__p2) among writer__page ids made the whole set split by page,
    every writer on both sides: now auto names the rows and asks."""
    source = _multi_writer_folder(tmp_path / "hands", ["wA", "wB", "wC"], pages=2, lines=1)
    labels = source / "labels.tsv"
    labels.write_text(labels.read_text().replace("\twC__p1\t", "\twC_p1\t"))
    with pytest.raises(DatasetError) as caught:
        read_folder(source, tmp_path / "auto")
    message = str(caught.value)
    assert "5 of 6 page ids name their writer (writer__page) but 1 do not" in message
    assert "labels.tsv:7 ('wC_p1')" in message and "--split-by page" in message
    assert not (tmp_path / "auto" / "manifest.jsonl").exists()
    assert len(read_folder(source, tmp_path / "page", split_by="page").manifest) == 6


def test_a_row_naming_a_symlink_loop_is_skipped(folder_dataset: Path, tmp_path: Path):
    loop = folder_dataset / "lines" / "loop.png"
    loop.symlink_to(loop)
    labels = folder_dataset / "labels.tsv"
    labels.write_text(labels.read_text() + "lines/loop.png\tp1\tround and round\n")
    result = read_folder(folder_dataset, tmp_path / "out")
    (skip,) = result.report.skipped
    assert skip.where == "labels.tsv:8 (lines/loop.png)"
    assert "symbolic link that leads nowhere" in skip.reason
    assert len(result.manifest) == 6
