"""Line ink maps computed once per dataset version: what makes a training sample cheap.

Decoding a JPEG and computing its ink map (:func:`quill.preprocess.line_ink`) is most of what
a line sample used to cost, and it gave the same pixels every epoch. The cache computes it once
for every line of a dataset folder, at the model's line height, and stores the maps as one
flat ``uint8`` array (``.npy``, memory-mapped by every loader worker) with an index of widths
and image paths (``.json``). Augmentation then works on these small maps in batches
(:mod:`quill.data.ink_augment`).

A cache is named by what it was computed from: the dataset's manifest version (its images,
texts and splits), the preprocessing geometry and :data:`CACHE_FORMAT`. Change any of them
and the cache is rebuilt; the stale files of the same dataset are removed. An image
replaced or deleted after the import changes none of them (images referenced in place are
hashed once, at import), so the cache also records each image's size and modification time
and is rebuilt, with a warning naming the images, when one differs: a stat per image, not a
hash. Image paths are
stored relative to the dataset folder, so a cache packed with its manifest onto another
machine (``quill train pack``) is found there without the images.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from quill.data.manifest import Manifest
from quill.data.processes import worker_context
from quill.data.readers.common import progress
from quill.digest import json_digest
from quill.errors import output_problem
from quill.preprocess import ImageError, PreprocessConfig, line_ink

log = logging.getLogger(__name__)

#: Bump when what a cache holds changes meaning; old caches are then rebuilt, not misread.
CACHE_FORMAT = 3  # 2: ink maps at a working resolution (preprocess.WORK_SCALE); 3: stats
#: Images per task handed to a worker process while building.
CHUNK = 64


def cache_key(manifest_version: str, config: PreprocessConfig) -> str:
    """16 hex digits naming a cache: the dataset version, the line geometry and the format.

    >>> a = cache_key("abc", PreprocessConfig(kind="line", height=48))
    >>> a == cache_key("abc", PreprocessConfig(kind="line", height=64)), len(a)
    (False, 16)
    """
    geometry = {k: v for k, v in config.to_dict().items() if not k.startswith("paragraph")}
    return json_digest([CACHE_FORMAT, manifest_version, geometry], 16)


@dataclass
class InkCache:
    """The cached ink maps of one dataset's lines: ``cache[path]`` is (height, W) uint8.

    ``failures`` maps the images that could not be read to the reason, so the loader leaves
    them out with a report instead of failing mid-epoch. ``stats`` holds each image's (size,
    mtime_ns) when the cache was built (none in a cache unpacked without its images).
    """

    pixels: np.ndarray  # (sum of H * W_i,) uint8, ink = 255
    height: int
    paths: list[str]  # relative to the dataset folder, in cache order
    widths: np.ndarray  # (N,) int64
    failures: dict[str, str]
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.widths * self.height)])
        self._row = {path: row for row, path in enumerate(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: str) -> bool:
        return path in self._row

    def row(self, path: str) -> int:
        return self._row[path]

    def image(self, row: int) -> np.ndarray:
        """The ink map of cache row ``row``, (height, W) uint8."""
        start, end = self.offsets[row], self.offsets[row + 1]
        return np.asarray(self.pixels[start:end]).reshape(self.height, -1)

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])


def file_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def changed_images(root: Path, cache: InkCache) -> list[str]:
    """The images (relative to ``root``) whose size or modification time differs from when
    ``cache`` was built, or that are gone."""
    return [image for image, stat in cache.stats.items() if file_stat(root / image) != stat]


def _ink_u8(path: str, config: PreprocessConfig) -> np.ndarray | str:
    """One image's line ink map as uint8, or the reason it cannot be read."""
    try:
        ink = line_ink(path, config)
    except ImageError as exc:
        return str(exc)
    return np.rint(ink * 255.0).astype(np.uint8)


def _ink_chunk(paths: Sequence[str], config: PreprocessConfig) -> list[np.ndarray | str]:
    return [_ink_u8(path, config) for path in paths]


def build(
    root: Path,
    images: Sequence[str],
    config: PreprocessConfig,
    workers: int = 0,
    show_progress: bool = False,
) -> InkCache:
    """Compute the ink maps of ``images`` (paths relative to ``root``), in parallel processes
    when ``workers`` > 0."""
    stats = {image: stat for image in images if (stat := file_stat(root / image))}
    absolute = [str((root / image).resolve()) for image in images]
    chunks = [absolute[i : i + CHUNK] for i in range(0, len(absolute), CHUNK)]
    description = f"ink maps of {root.name}"
    done: Iterable[np.ndarray | str]
    if workers > 0 and len(chunks) > 1:
        with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
            done = chain.from_iterable(pool.map(_ink_chunk, chunks, repeat(config)))
            results = list(progress(done, description, len(absolute), show_progress))
    else:
        done = (_ink_u8(path, config) for path in absolute)
        results = list(progress(done, description, len(absolute), show_progress))
    maps = [r for r in results if not isinstance(r, str)]
    failures = {img: r for img, r in zip(images, results, strict=True) if isinstance(r, str)}
    kept = [img for img, r in zip(images, results, strict=True) if not isinstance(r, str)]
    pixels = np.concatenate([m.ravel() for m in maps]) if maps else np.zeros(0, np.uint8)
    widths = np.array([m.shape[1] for m in maps], dtype=np.int64)
    return InkCache(pixels, config.height, kept, widths, failures, stats)


def _files(directory: Path, name: str, key: str) -> tuple[Path, Path]:
    stem = f"{name}-{key}"
    return directory / f"{stem}.npy", directory / f"{stem}.json"


def save(cache: InkCache, directory: Path, name: str, key: str) -> Path:
    """Write ``cache`` as ``<name>-<key>.npy`` + ``.json`` atomically; remove stale keys."""
    directory.mkdir(parents=True, exist_ok=True)
    array_path, index_path = _files(directory, name, key)
    tmp = array_path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, cache.pixels)
    os.replace(tmp, array_path)
    index = {
        "format": CACHE_FORMAT,
        "key": key,
        "height": cache.height,
        "paths": cache.paths,
        "widths": cache.widths.tolist(),
        "failures": cache.failures,
        "stats": cache.stats,
    }
    tmp_index = index_path.with_suffix(f".tmp{os.getpid()}.json")
    tmp_index.write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp_index, index_path)
    for stale in directory.glob(f"{name}-*.json"):
        # another key of this dataset (16 hex digits), not a dataset named "<name>-..."
        if stale != index_path and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}", stale.stem):
            log.info("removing stale ink cache %s", stale)
            stale.unlink(missing_ok=True)
            stale.with_suffix(".npy").unlink(missing_ok=True)
    return array_path


def load(directory: Path, name: str, key: str) -> InkCache | None:
    """The cache saved under ``name`` and ``key``, memory-mapped; None if absent or unusable."""
    array_path, index_path = _files(directory, name, key)
    if not (array_path.is_file() and index_path.is_file()):
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        pixels = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("ink cache %s is unreadable (%s); rebuilding it", array_path, exc)
        return None
    if index.get("format") != CACHE_FORMAT or index.get("key") != key:
        return None
    widths = np.asarray(index["widths"], dtype=np.int64)
    if int((widths * index["height"]).sum()) != pixels.shape[0]:
        log.warning("ink cache %s does not match its index; rebuilding it", array_path)
        return None
    stats = {image: (size, mtime) for image, (size, mtime) in index.get("stats", {}).items()}
    return InkCache(pixels, int(index["height"]), index["paths"], widths, index["failures"], stats)


def dataset_cache(
    manifest: Manifest,
    name: str,
    config: PreprocessConfig,
    directory: Path,
    workers: int = 0,
    show_progress: bool = False,
) -> InkCache:
    """The ink cache of a dataset's line samples, loaded if current, else built and saved.

    ``name`` tells datasets apart inside ``directory`` (a training run's source name). A
    cache whose images changed since it was built (:func:`changed_images`) is rebuilt.
    """
    key = cache_key(manifest.version, config)
    cache = load(directory, name, key)
    changed = changed_images(manifest.root, cache) if cache is not None else []
    if cache is not None and not changed:
        return cache
    if changed:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        log.warning(
            "%d image(s) of %s changed or went since its ink cache was built: %s. The dataset "
            "changed since import (its manifest's hashes and version still describe the old "
            "images: import it again to version the change); rebuilding the ink cache",
            len(changed),
            name,
            shown,
        )
    images = list(dict.fromkeys(s.image for s in manifest if s.kind == "line"))
    log.info("building the ink cache of %s (%d lines)", name, len(images))
    unwritable = output_problem(directory, folder=True)  # asked first: the build takes minutes
    cache = build(manifest.root, images, config, workers, show_progress)
    if unwritable:
        log.warning(
            "the ink cache of %s cannot be saved in %s (%s): it is kept in memory for this "
            "run and built again next time; set data.cache_dir to a writable folder to keep it",
            name,
            directory,
            unwritable,
        )
        return cache
    save(cache, directory, name, key)
    return load(directory, name, key) or cache
