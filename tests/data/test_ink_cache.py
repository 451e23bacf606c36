"""The ink cache: named by what it was computed from, rebuilt rather than misread."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from quill.data import ink_cache
from quill.data.datamodule import CACHE_FOLDER, HTRDataModule
from quill.data.manifest import Manifest
from quill.preprocess import PreprocessConfig

CONFIG = PreprocessConfig(kind="line", height=32)
TEXTS = {"train": ["ink one", "ink two", "three"], "val": ["val line"]}


def _cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_key_changes_with_version_geometry_and_format(monkeypatch) -> None:
    key = ink_cache.cache_key("v1", CONFIG)
    assert key == ink_cache.cache_key("v1", PreprocessConfig(kind="line", height=32))
    assert len(key) == 16 and int(key, 16) >= 0
    assert ink_cache.cache_key("v2", CONFIG) != key
    for geometry in (
        {"height": 48},
        {"max_width": 512},
        {"width_multiple": 4},
        {"crop_to_ink": False},
    ):
        assert ink_cache.cache_key("v1", replace(CONFIG, **geometry)) != key, geometry
    # the paragraph canvas is not what a line cache holds
    assert ink_cache.cache_key("v1", replace(CONFIG, paragraph_width=999)) == key
    monkeypatch.setattr(ink_cache, "CACHE_FORMAT", ink_cache.CACHE_FORMAT + 1)
    assert ink_cache.cache_key("v1", CONFIG) != key


def test_worker_processes_compute_the_maps_computed_here(make_line_dataset, monkeypatch) -> None:
    """Workers start from a fresh interpreter (quill.data.processes), not a fork of this one,
    and give the same bytes as building in-process."""
    manifest = make_line_dataset("lines", TEXTS)
    images = [s.image for s in manifest]
    here = ink_cache.build(manifest.root, images, CONFIG)
    monkeypatch.setattr(ink_cache, "CHUNK", 2)  # several chunks, so the pool is used
    there = ink_cache.build(manifest.root, images, CONFIG, workers=2)
    assert there.paths == here.paths == images and there.failures == {}
    assert np.array_equal(there.widths, here.widths)
    assert np.array_equal(there.pixels, here.pixels)


def test_unreadable_images_are_failures_and_skipped_by_the_datamodule(make_line_dataset) -> None:
    manifest = make_line_dataset("lines", TEXTS)
    broken = manifest.samples[1].image
    png = (manifest.root / broken).read_bytes()
    (manifest.root / broken).write_bytes(png[: len(png) // 3])  # a truncated PNG
    images = [s.image for s in manifest]
    cache = ink_cache.build(manifest.root, images, CONFIG)
    assert list(cache.failures) == [broken] and cache.failures[broken]
    assert broken not in cache and len(cache) == len(images) - 1
    assert cache.paths == [image for image in images if image != broken]
    for row in range(len(cache)):
        ink = cache.image(row)
        assert ink.dtype == np.uint8 and ink.shape[0] == 32 and ink.max() > 128
    assert cache.nbytes == int(cache.widths.sum()) * 32

    module = HTRDataModule([manifest.root], preprocess_config=CONFIG, num_workers=0)
    module.setup("fit")
    assert [s.where for s in module.skipped] == [f"lines:{broken}"]
    assert module.skipped[0].reason == f"unreadable image: {cache.failures[broken]}"
    assert len(module.train_items) == 2 and all(item.row >= 0 for item in module.train_items)
    # the failure is stored with the cache: a second module reads it, not the image
    index = next((manifest.root / CACHE_FOLDER).glob("*.json"))
    assert json.loads(index.read_text())["failures"] == cache.failures
    again = HTRDataModule([manifest.root], preprocess_config=CONFIG, num_workers=0)
    again.setup("fit")
    assert again.skipped == module.skipped


@pytest.mark.parametrize(
    "damage",
    ["garbage npy", "truncated npy", "index widths off", "index not json"],
)
def test_a_damaged_cache_is_rebuilt_not_misread(make_line_dataset, tmp_path, caplog, damage):
    manifest = make_line_dataset("lines", TEXTS)
    directory = tmp_path / "caches"
    first = ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    expected = np.array(first.pixels)
    key = ink_cache.cache_key(manifest.version, CONFIG)
    array_path, index_path = directory / f"lines-{key}.npy", directory / f"lines-{key}.json"
    assert _cache_files(directory) == [index_path.name, array_path.name]
    if damage == "garbage npy":
        array_path.write_bytes(b"this is not an npy file at all")
    elif damage == "truncated npy":
        array_path.write_bytes(array_path.read_bytes()[:-100])
    elif damage == "index widths off":
        index = json.loads(index_path.read_text())
        index["widths"][0] += 1
        index_path.write_text(json.dumps(index))
    else:
        index_path.write_text("{not json")
    assert ink_cache.load(directory, "lines", key) is None
    with caplog.at_level(logging.WARNING, logger="quill.data.ink_cache"):
        rebuilt = ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    assert "rebuilding it" in caplog.text
    assert np.array_equal(np.asarray(rebuilt.pixels), expected)
    assert rebuilt.paths == first.paths and np.array_equal(rebuilt.widths, first.widths)
    reloaded = ink_cache.load(directory, "lines", key)  # the files on disk are whole again
    assert reloaded is not None and np.array_equal(np.asarray(reloaded.pixels), expected)
    assert _cache_files(directory) == [index_path.name, array_path.name]


def test_a_cache_of_another_format_is_not_read(make_line_dataset, tmp_path) -> None:
    manifest = make_line_dataset("lines", TEXTS)
    directory = tmp_path / "caches"
    ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    key = ink_cache.cache_key(manifest.version, CONFIG)
    index_path = directory / f"lines-{key}.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "format": ink_cache.CACHE_FORMAT + 1}))
    assert ink_cache.load(directory, "lines", key) is None


def test_the_stale_cache_of_an_older_dataset_version_is_removed(make_line_dataset) -> None:
    manifest = make_line_dataset("lines", TEXTS)
    folder = manifest.root / CACHE_FOLDER
    HTRDataModule([manifest.root], preprocess_config=CONFIG, num_workers=0).setup("fit")
    old_key = ink_cache.cache_key(manifest.version, CONFIG)
    assert _cache_files(folder) == [f"lines-{old_key}.json", f"lines-{old_key}.npy"]
    newer = Manifest(manifest.root, [*manifest.samples[:2], *manifest.samples[3:]])
    newer.save()  # a new dataset version: one train line fewer
    module = HTRDataModule([manifest.root], preprocess_config=CONFIG, num_workers=0)
    module.setup("fit")
    new_key = ink_cache.cache_key(newer.version, CONFIG)
    assert new_key != old_key
    assert _cache_files(folder) == [f"lines-{new_key}.json", f"lines-{new_key}.npy"]
    assert len(module.caches["lines"]) == len(newer.samples)


def test_a_shared_cache_dir_keeps_the_caches_of_similarly_named_sources(
    make_line_dataset, tmp_path
) -> None:
    synth = make_line_dataset("synth", TEXTS)
    bigger = make_line_dataset("synth-big", {"train": ["another line"]})
    directory = tmp_path / "shared"
    ink_cache.dataset_cache(bigger, "synth-big", CONFIG, directory)
    ink_cache.dataset_cache(synth, "synth", CONFIG, directory)
    big_key = ink_cache.cache_key(bigger.version, CONFIG)
    assert ink_cache.load(directory, "synth-big", big_key) is not None


def test_a_cache_folder_that_cannot_be_written_keeps_the_cache_in_memory(
    make_line_dataset, tmp_path, caplog
) -> None:
    """A read-only dataset built its whole cache, then failed with PermissionError: a
    training run could not read a dataset it may not write into."""
    manifest = make_line_dataset("lines", TEXTS)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    with caplog.at_level(logging.WARNING, logger="quill.data.ink_cache"):
        cache = ink_cache.dataset_cache(manifest, "lines", CONFIG, blocker / "caches")
    assert "kept in memory for this run" in caplog.text and "data.cache_dir" in caplog.text
    built = ink_cache.dataset_cache(manifest, "lines", CONFIG, tmp_path / "caches")
    assert np.array_equal(np.asarray(cache.pixels), np.asarray(built.pixels))
    assert cache.paths == built.paths


def test_an_image_changed_after_import_rebuilds_the_cache(make_line_dataset, tmp_path, caplog):
    """Images referenced in place are hashed once, at import: a replaced image kept the
    dataset version, so training read the old ink from the cache (a deleted one too)."""
    manifest = make_line_dataset("lines", TEXTS)
    directory = tmp_path / "caches"
    first = ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    changed, gone = manifest.samples[0], manifest.samples[1]
    wider = Image.new("L", (400, 60), 230)
    ImageDraw.Draw(wider).text((10, 10), "a much longer line of ink", fill=20)
    wider.save(manifest.path_of(changed))
    manifest.path_of(gone).unlink()
    with caplog.at_level(logging.WARNING, logger="quill.data.ink_cache"):
        rebuilt = ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    named = f"{changed.image}, {gone.image}"
    assert (
        f"2 image(s) of lines changed or went since its ink cache was built: {named}" in caplog.text
    )
    assert "import it again" in caplog.text
    row = rebuilt.row(changed.image)
    assert rebuilt.image(row).shape[1] > first.image(first.row(changed.image)).shape[1]
    assert gone.image not in rebuilt and gone.image in rebuilt.failures
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quill.data.ink_cache"):
        ink_cache.dataset_cache(manifest, "lines", CONFIG, directory)
    assert not caplog.text  # rebuilt once, then current
