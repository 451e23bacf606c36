"""Resolving --data arguments: Quill datasets, labels.tsv folders (cached import, page or
writer split, a vocabulary that fits the model), Hooker."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from quill.bench.datasets import (
    FINGERPRINT_NAME,
    BenchDataError,
    bench_tokenizer,
    detect_format,
    load_dataset,
)
from quill.data.manifest import SPLITS, assign_splits
from quill.vocab import VOCABULARIES, Tokenizer

from .conftest import render_line, write_printed_dataset


def test_manifest_dataset_with_slices_and_a_seeded_limit(printed_dataset: Path) -> None:
    dataset = load_dataset(f"printed={printed_dataset}", slices=["group", "inverted", "style"])
    assert (dataset.name, dataset.format, dataset.split) == ("printed", "manifest", "test")
    assert len(dataset.samples) == 4 and all(s.image.is_file() for s in dataset.samples)
    assert dataset.samples[3].slices == {"group": "page-b", "inverted": "True"}
    two = load_dataset(str(printed_dataset), limit=2)
    assert len(two.samples) == 2
    assert two.samples == load_dataset(str(printed_dataset), limit=2).samples
    assert two.name == printed_dataset.name


def test_a_missing_split_or_source_is_a_clear_error(tmp_path: Path) -> None:
    write_printed_dataset(tmp_path / "train-only", split="train")
    with pytest.raises(BenchDataError, match=r"no 'test' samples \(splits: train=4\)"):
        load_dataset(str(tmp_path / "train-only"))
    with pytest.raises(BenchDataError, match="dataset not found"):
        load_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchDataError, match="expected manifest.jsonl"):
        detect_format(tmp_path / "empty")


def test_an_iam_copy_is_recognised_by_its_layout(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    (tmp_path / "formsA-D").mkdir()
    assert detect_format(tmp_path) == "iam"


#: An mtime long before any test runs (2001), given to a file before a step that may rewrite it.
LONG_AGO_NS = 10**18


def backdate(path: Path) -> int:
    """Set ``path``'s mtime to :data:`LONG_AGO_NS` and return it. A rewrite then always shows
    as a new mtime: two writes a few milliseconds apart can share one, as many file systems
    stamp files from a clock that ticks only every few milliseconds."""
    os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))
    return LONG_AGO_NS


def _labelled_folder(root: Path, pages: int) -> None:
    """A folder dataset as the Hooker letters ship: images + labels.tsv (file, page, text)."""
    (root / "lines").mkdir(parents=True, exist_ok=True)
    with open(root / "labels.tsv", "w", newline="", encoding="utf-8") as handle:
        rows = csv.writer(handle, delimiter="\t", lineterminator="\n")
        rows.writerow(["file", "page", "text"])
        for page in range(pages):
            text = f"line of page {page}"
            (root / "lines" / f"p{page}.png").write_bytes(render_line(text))
            rows.writerow([f"lines/p{page}.png", f"page{page}", text])


def test_folder_source_is_imported_once_and_again_when_it_changes(tmp_path: Path) -> None:
    source, cache = tmp_path / "letters", tmp_path / "cache"
    _labelled_folder(source, pages=30)
    first = load_dataset(str(source), cache_root=cache)
    manifest = cache / "letters" / "manifest.jsonl"
    written = manifest.stat().st_mtime_ns
    stamp = backdate(manifest)
    again = load_dataset(str(source), cache_root=cache)
    assert manifest.stat().st_mtime_ns == stamp  # reused, not re-imported
    assert again.samples == first.samples and first.format == "folder"
    expected = {
        p for p, split in assign_splits(f"page{i}" for i in range(30)).items() if split == "test"
    }
    assert {s.slices["group"] for s in first.samples} == expected

    with open(source / "labels.tsv", "a", encoding="utf-8") as handle:
        handle.write("lines/p0.png\tpage999\textra line\n")
    os.utime(source / "labels.tsv", ns=(written + 10**9, written + 10**9))
    load_dataset(str(source), cache_root=cache)
    assert manifest.stat().st_mtime_ns != stamp


def test_real_hooker_lines_split_by_page_name(hooker_dir: Path, tmp_path: Path) -> None:
    """A few real lines of 60 pages (absolute paths): the test pages are those assign_splits
    puts in test by page name, however many lines each page has."""
    with open(hooker_dir / "labels.tsv", encoding="utf-8") as handle:
        rows = [line.split("\t") for line in handle.read().splitlines()[1:] if line]
    first_of_page: dict[str, list[str]] = {}
    for file, page, text in rows:
        first_of_page.setdefault(page, [str(hooker_dir / file), page, text])
    subset = list(first_of_page.values())[:60]
    folder = tmp_path / "subset"
    folder.mkdir()
    lines = ["file\tpage\ttext", *("\t".join(row) for row in subset)]
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = load_dataset(str(folder), cache_root=tmp_path / "cache")
    splits = assign_splits(page for _, page, _ in subset)
    assert {s.slices["group"] for s in dataset.samples} == {
        page for page, split in splits.items() if split == "test"
    }
    assert all(s.image.is_relative_to(hooker_dir.resolve()) for s in dataset.samples)


@pytest.mark.slow
def test_hooker_test_split_is_whole_pages_never_trained_on(hooker_dir: Path, tmp_path) -> None:
    dataset = load_dataset(f"hooker={hooker_dir}", cache_root=tmp_path)
    with open(hooker_dir / "labels.tsv", encoding="utf-8") as handle:
        pages = [line.split("\t")[1] for line in handle.read().splitlines()[1:] if line]
    splits = assign_splits(pages)
    test_pages = {page for page, split in splits.items() if split == "test"}
    assert {s.slices["group"] for s in dataset.samples} == test_pages
    expected_lines = sum(1 for page in pages if splits[page] == "test")
    # Only lines with characters outside the vocabulary are left out, each with its reason.
    assert (
        len(dataset.samples)
        + len([r for r in dataset.import_skipped if any(p in r for p in test_pages)])
        == expected_lines
    )
    assert len(dataset.samples) > 400


def writers_in(split: str, count: int, prefix: str = "hand") -> list[str]:
    """``count`` writer names that the writer split (assign_splits) puts in ``split``."""
    splits = assign_splits(f"{prefix}{i}" for i in range(400))
    return [w for w, s in sorted(splits.items()) if s == split][:count]


def write_writer_folder(root: Path, writers: list[str], pages: int = 2) -> list[list[str]]:
    """A multi-writer folder as copiste ships: labels.tsv with ``writer__page`` ids, French
    text with accents. Returns its rows (file, page, text)."""
    (root / "lines").mkdir(parents=True, exist_ok=True)
    rows = []
    for writer in writers:
        for page in range(pages):
            text = f"Fédération {writer} {page}" if page % 2 else f"lettre de {writer}, page {page}"
            name = f"lines/{writer}__p{page}.png"
            (root / name).write_bytes(render_line(text))
            rows.append([name, f"{writer}__p{page}", text])
    with open(root / "labels.tsv", "w", newline="", encoding="utf-8") as handle:
        table = csv.writer(handle, delimiter="\t", lineterminator="\n")
        table.writerows([["file", "page", "text"], *rows])
    return rows


def test_multi_writer_folder_is_split_by_writer_with_latin_labels(tmp_path: Path) -> None:
    writers = [w for split in SPLITS for w in writers_in(split, 2)]
    rows = write_writer_folder(tmp_path / "hands", writers)
    dataset = load_dataset(f"hands={tmp_path / 'hands'}", cache_root=tmp_path / "cache")
    assert dataset.split_by == "writer" and dataset.unseen_writers
    assert dataset.vocabulary == "latin" and not dataset.import_skipped
    test_writers = set(writers_in("test", 2))
    assert {s.slices["group"] for s in dataset.samples} == test_writers
    expected = {text for _, page, text in rows if page.split("__")[0] in test_writers}
    assert {s.text for s in dataset.samples} == expected  # accented lines read, not dropped
    assert any("é" in s.text for s in dataset.samples)
    described = dataset.describe()
    assert (described["split_by"], described["vocabulary"]) == ("writer", "latin")
    val = load_dataset(f"hands={tmp_path / 'hands'}", split="val", cache_root=tmp_path / "cache")
    assert val.unseen_writers
    train = load_dataset(f"hands={tmp_path / 'hands'}", split="train", cache_root=tmp_path / "c")
    assert train.split_by == "writer" and not train.unseen_writers


def test_a_page_split_folder_is_not_unseen_writers(tmp_path: Path) -> None:
    _labelled_folder(tmp_path / "letters", pages=30)
    dataset = load_dataset(str(tmp_path / "letters"), cache_root=tmp_path / "cache")
    assert dataset.split_by == "group" and not dataset.unseen_writers


def test_a_writer_split_without_test_writers_is_empty_not_an_error(tmp_path: Path) -> None:
    write_writer_folder(tmp_path / "few", writers_in("train", 2) + writers_in("val", 1))
    dataset = load_dataset(str(tmp_path / "few"), cache_root=tmp_path / "cache")
    assert dataset.samples == [] and dataset.split_by == "writer"
    assert dataset.note == (
        "no test samples: the writer split put all 3 writers elsewhere (train=4, val=2)"
    )


def test_the_bench_vocabulary_fits_the_model(tiny_model: Path, tmp_path: Path) -> None:
    latin = Tokenizer.named("latin")
    assert bench_tokenizer() == latin
    assert bench_tokenizer(tiny_model) == latin  # an ASCII model: the Latin set, a superset
    (tmp_path / "quill-model.json").write_text(
        json.dumps({"tokenizer": {"characters": "ab∞é"}}), encoding="utf-8"
    )
    wider = bench_tokenizer(tmp_path)
    assert wider.characters == VOCABULARIES["latin"] + "∞"
    assert not wider.unknown_characters("∞ better plan")


def test_cache_is_rebuilt_when_the_split_rule_or_vocabulary_changes(tmp_path: Path) -> None:
    writers = writers_in("test", 2) + writers_in("train", 2)
    write_writer_folder(tmp_path / "hands", writers)
    cache = tmp_path / "cache"
    load_dataset(f"hands={tmp_path / 'hands'}", cache_root=cache)
    manifest, stamp_path = cache / "hands" / "manifest.jsonl", cache / "hands" / FINGERPRINT_NAME
    stamp = json.loads(stamp_path.read_text())
    assert stamp["split_by"] == "auto" and stamp["vocabulary"]

    # A cache written before split rules and vocabularies were recorded: rebuilt, not reused.
    old = {k: v for k, v in stamp.items() if k not in ("split_by", "vocabulary")}
    stamp_path.write_text(json.dumps(old))
    before = backdate(manifest)
    again = load_dataset(f"hands={tmp_path / 'hands'}", cache_root=cache)
    assert manifest.stat().st_mtime_ns != before and json.loads(stamp_path.read_text()) == stamp
    assert again.split_by == "writer"

    # Another vocabulary (an ASCII-only import) is another cache: the accented lines go.
    before = backdate(manifest)
    ascii_only = load_dataset(
        f"hands={tmp_path / 'hands'}", cache_root=cache, tokenizer=Tokenizer.named("ascii")
    )
    assert manifest.stat().st_mtime_ns != before and ascii_only.vocabulary == "ascii"
    assert len(ascii_only.samples) == len(again.samples) // 2
    assert all("outside the vocabulary: 'é'" in r for r in ascii_only.import_skipped)
