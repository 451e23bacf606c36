"""Label Studio tasks from images: one task per image, optionally pre-annotated by a model.

A task is ``{"data": {"ocr": URL, ...}, "predictions": [...]}`` in Label Studio's JSON import
format (or a CSV whose header names the variables). Local images are referenced through
Label Studio's local-files URLs (``/data/local-files/?d=<path relative to the document
root>``), which the server resolves under ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``; remote
images keep their URL.

Pre-annotations are the model's lines: for each line one region made of two results sharing
an ``id`` (a ``rectanglelabels`` box and a ``textarea`` transcription), in percent of the
image, so annotators correct a draft instead of typing every page from scratch.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from quill.annotation.config import IMAGE_NAME, IMAGE_VARIABLE, LABEL_NAME, LINE_LABEL, TEXT_NAME
from quill.annotation.geometry import Box, box_to_percent
from quill.data.manifest import MANIFEST_NAME, Manifest, file_sha256
from quill.errors import QuillError

LOCAL_FILES_PREFIX = "/data/local-files/?d="
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
LIST_SUFFIXES = (".txt", ".lst", ".urls")
#: EXIF orientations that turn the picture sideways (so width and height swap on display).
_SIDEWAYS = {5, 6, 7, 8}


class TaskSourceError(QuillError, ValueError):
    """A task source (directory, manifest, list, URL) cannot be read."""

    code = "task_source_invalid"


@dataclass(frozen=True)
class ImageRef:
    """One image to annotate: a local file or a remote URL (never both)."""

    path: Path | None = None
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def collect_images(sources: Sequence[str]) -> list[ImageRef]:
    """Every image named by ``sources``, in order, each once.

    A source is an http(s) URL, an image file, a folder (searched recursively), a dataset
    folder or ``manifest.jsonl`` (its samples' images), or a ``.txt`` list of URLs and paths
    (paths relative to the list's folder).
    """
    refs: list[ImageRef] = []
    for source in sources:
        refs.extend(_expand(source))
    seen: set[str] = set()
    unique = []
    for ref in refs:
        key = ref.url or str(ref.path)
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return unique


def _expand(source: str) -> list[ImageRef]:
    if is_url(source):
        return [ImageRef(url=source)]
    path = Path(source)
    if (path.is_dir() and (path / MANIFEST_NAME).is_file()) or path.suffix == ".jsonl":
        return _from_manifest(path)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise TaskSourceError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        return [ImageRef(path=p.resolve()) for p in found]
    if not path.is_file():
        raise TaskSourceError(f"{source}: no such file, folder or http(s) URL")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [ImageRef(path=path.resolve())]
    if path.suffix.lower() in LIST_SUFFIXES:
        return _from_list(path)
    lists = ", ".join(LIST_SUFFIXES)
    raise TaskSourceError(f"{path}: not an image, a manifest (.jsonl) or a list ({lists})")


def _from_manifest(path: Path) -> list[ImageRef]:
    try:
        manifest = Manifest.load(path)
    except (FileNotFoundError, ValueError) as exc:
        raise TaskSourceError(str(exc)) from exc
    return [
        ImageRef(
            path=manifest.path_of(sample),
            extra={"sha256": sample.sha256, "source": sample.source, "group": sample.group},
        )
        for sample in manifest
    ]


def _from_list(path: Path) -> list[ImageRef]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskSourceError(
            f"{path}: not a UTF-8 list of image paths and URLs ({exc.reason})"
        ) from exc
    refs = []
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_url(entry):
            refs.append(ImageRef(url=entry))
            continue
        image = (path.parent / entry).resolve()
        if not image.is_file():
            raise TaskSourceError(f"{path}:{number}: no such image {entry!r}")
        refs.append(ImageRef(path=image))
    return refs


def local_files_url(image: Path, document_root: Path, prefix: str = LOCAL_FILES_PREFIX) -> str:
    """URL Label Studio serves ``image`` at: ``prefix`` + path relative to the document root.

    >>> local_files_url(Path("/srv/scans/a b.jpg"), Path("/srv"))
    '/data/local-files/?d=scans/a%20b.jpg'
    """
    try:
        relative = image.resolve().relative_to(document_root.resolve())
    except ValueError as exc:
        raise TaskSourceError(
            f"{image} is outside the document root {document_root}: Label Studio only serves "
            "files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (pass --document-root)"
        ) from exc
    return prefix + quote(relative.as_posix(), safe="/")


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed, EXIF orientation applied, header only."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in _SIDEWAYS else (width, height)


def region_id(*parts: object) -> str:
    """A short stable id for a region (Label Studio ids are short random strings).

    >>> region_id("task", 3) == region_id("task", 3), len(region_id("x"))
    (True, 10)
    """
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:10]


def line_results(
    rid: str, box: Box, text: str, width: int, height: int, score: float | None = None
) -> list[dict[str, Any]]:
    """The two results of one line region: its box (label ``Line``) and its transcription."""
    common: dict[str, Any] = {
        "id": rid,
        "to_name": IMAGE_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
    }
    if score is not None:
        common["score"] = round(float(score), 4)
    geometry = box_to_percent(box, width, height)
    return [
        {
            **common,
            "from_name": LABEL_NAME,
            "type": "rectanglelabels",
            "value": {**geometry, "rectanglelabels": [LINE_LABEL]},
        },
        {
            **common,
            "from_name": TEXT_NAME,
            "type": "textarea",
            "value": {**geometry, "text": [text]},
        },
    ]


def prediction_for(prediction: Any, key: str, width: int, height: int) -> dict[str, Any] | None:
    """Label Studio prediction from a ``quill.inference`` Prediction (boxes are l, t, r, b).

    Lines read as nothing are left out: on a blank page the model answers one page-wide
    line with empty text (and a high score), which would give annotators a box to delete
    rather than a draft. None when no line is left (no pre-annotation at all).
    """
    result = []
    for index, line in enumerate(prediction.lines):
        if not line.text.strip():
            continue
        left, top, right, bottom = (float(v) for v in line.box)
        box = Box(left, top, right - left, bottom - top)
        result += line_results(
            region_id(key, index), box, line.text, width, height, line.confidence
        )
    if not result:
        return None
    return {
        "model_version": str(prediction.model_version),
        "score": round(float(prediction.confidence), 4),
        "result": result,
    }


Predictor = Callable[[list[Path]], list[Any]]


def build_tasks(
    refs: Iterable[ImageRef],
    document_root: Path,
    url_prefix: str = LOCAL_FILES_PREFIX,
    predictor: Predictor | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Tasks for ``refs``; with a ``predictor``, local images get pre-annotations.

    Returns the tasks and notes on what could not be pre-annotated (remote URLs: Quill does
    not download at run time).
    """
    tasks: list[dict[str, Any]] = []
    notes: list[str] = []
    pending: list[tuple[dict[str, Any], Path]] = []

    def flush() -> None:
        if predictor is None or not pending:
            return
        predictions = predictor([path for _, path in pending])
        for (task, path), prediction in zip(pending, predictions, strict=True):
            width, height = upright_size(path)
            converted = prediction_for(prediction, str(path), width, height)
            if converted is not None:
                task["predictions"] = [converted]
        if progress:
            progress(len(pending))
        pending.clear()

    for ref in refs:
        if ref.url is not None:
            tasks.append({"data": {IMAGE_VARIABLE: ref.url, **ref.extra}})
            if predictor is not None:
                notes.append(f"{ref.url}: remote image, not pre-annotated")
            elif progress:
                progress(1)
            continue
        assert ref.path is not None
        data = {
            IMAGE_VARIABLE: _reference(ref.path, document_root, url_prefix),
            "image_path": _relative_or_absolute(ref.path, document_root),
            "sha256": ref.extra.get("sha256") or file_sha256(ref.path),
            **{k: v for k, v in ref.extra.items() if k != "sha256"},
        }
        task: dict[str, Any] = {"data": data}
        tasks.append(task)
        if predictor is None:
            if progress:
                progress(1)
            continue
        pending.append((task, ref.path))
        if len(pending) >= batch_size:
            flush()
    flush()
    return tasks, notes


def _reference(path: Path, document_root: Path, url_prefix: str) -> str:
    """The URL of a local image: ``url_prefix`` + its path under the document root.

    Outside the root it has no URL: neither Label Studio's local files nor a web server
    serves a path that climbs out of its root, and an absolute path glued to a web prefix
    (``https://host/images//home/...``) names nothing either.
    """
    if url_prefix == LOCAL_FILES_PREFIX:
        return local_files_url(path, document_root, url_prefix)
    try:
        relative = path.resolve().relative_to(document_root.resolve())
    except ValueError as exc:
        raise TaskSourceError(
            f"{path} is outside the document root {document_root}: --url-prefix "
            f"{url_prefix} is followed by the path under --document-root (pass the folder "
            "the web server serves at that prefix)"
        ) from exc
    return url_prefix + quote(relative.as_posix(), safe="/")


def _relative_or_absolute(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def write_tasks(tasks: list[dict[str, Any]], out: Path, fmt: str = "json") -> Path:
    """Write tasks as a JSON list or as CSV (header = the task variables)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        out.write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return out
    if fmt != "csv":
        raise ValueError(f"unknown task format {fmt!r}: use json or csv")
    if any("predictions" in task for task in tasks):
        raise ValueError("CSV tasks cannot carry pre-annotations: use --format json with --model")
    columns = list(dict.fromkeys(key for task in tasks for key in task["data"]))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for task in tasks:
            writer.writerow(task["data"])
    return out


class ModelUnavailable(QuillError, ValueError):
    """The model given for pre-annotations cannot be loaded."""

    code = "preannotation_model_unavailable"


def recognizer_predictor(model_dir: Path, threads: int | None = None) -> Predictor:
    """A predictor backed by a staged model; imported lazily (inference is optional here)."""
    from quill.inference.recognizer import Recognizer
    from quill.staged_model import ModelLoadError

    try:
        recognizer = Recognizer.from_path(model_dir, threads=threads)
    except ModelLoadError as exc:
        raise ModelUnavailable(f"--model: {exc}") from exc

    def predict(paths: list[Path]) -> list[Any]:
        return recognizer.predict([str(p) for p in paths], kind="paragraph")

    return predict
