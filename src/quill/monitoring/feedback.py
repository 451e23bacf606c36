"""``quill monitor feedback-dataset``: what users corrected becomes a dataset version.

A correction typed under a prediction is a label for the image the user sent: no
annotation round needed. Each corrected, still-retained image becomes one sample with
``source="feedback"`` in a dataset folder (images + ``manifest.jsonl``), split by image hash
(the same photo sent twice lands on one side), ready for ``quill train`` to mix in by
weight. Dataset folders from ``quill annotate import`` can be merged into the same version;
samples of one image (a photo corrected by its user and also annotated in Label Studio) end
in one group and one split.

The dataset is built beside the output folder and moved in only when it holds samples
(:func:`~quill.data.manifest.building_dataset`): a dataset already there is replaced only
when asked, never by an empty one, and what the old one held that the new one does not (the
photo of a request deleted since) goes with it.

People photograph pages, and a line model learns from lines: a corrected page whose
correction has one line for each line the model found also gives one line sample per line
(the line as the model read it, cut from the page again by the segmenter, or by its box),
beside the page sample. So corrections typed in the web app teach ``quill adapt`` and
``quill train`` the user's own hand, not only single-line photos.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from PIL import Image

from quill.data.manifest import Manifest, Sample, building_dataset, file_sha256
from quill.data.readers.common import REPORT_NAME, DatasetWriter, ImportReport, ImportResult
from quill.evaluation.normalise import normalise
from quill.models.segment import segment_lines
from quill.monitoring.records import StoredPrediction
from quill.monitoring.store import MonitoringStore
from quill.preprocess import ImageError, load_image
from quill.vocab import Tokenizer

SOURCE = "feedback"
#: A SHA-256 in hex: how the monitoring store (and ``quill monitor export``) names an image.
_SHA256 = re.compile(r"[0-9a-f]{64}")


def corrected(predictions: Sequence[StoredPrediction]) -> list[StoredPrediction]:
    """Predictions carrying a user correction, one per image: the latest correction wins.

    The same photo sent twice and corrected twice is one image with two labels; a dataset
    holding both would teach contradictions, and the later correction is the user's last
    word. "Latest" is when the correction was typed (then when the prediction was made).
    A prediction whose image was not kept stands alone (it is reported, not written).
    """
    latest: dict[str, StoredPrediction] = {}
    for p in sorted(predictions, key=_corrected_at):
        if p.correction is not None:
            latest[p.image_sha256 or p.request_id] = p
    return sorted(latest.values(), key=lambda p: p.created_at)


def _corrected_at(p: StoredPrediction) -> tuple[datetime, datetime]:
    typed = [f.created_at for f in p.feedback if f.correction]
    return max(typed, default=p.created_at), p.created_at


def build_feedback_dataset(
    store: MonitoringStore,
    predictions: Sequence[StoredPrediction],
    out: Path,
    *,
    overwrite: bool = False,
    merge: Sequence[Path] = (),
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    tokenizer: Tokenizer | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Write the corrected predictions (and the samples of ``merge`` datasets) to ``out``.

    Unusable corrections (no image kept, unreadable image, characters outside the
    vocabulary) and corrections of an image corrected again later are recorded in the report
    with the request id, never silently dropped. A dataset already in ``out`` is refused
    (:class:`~quill.data.manifest.DatasetExistsError`) unless ``overwrite``, and kept as it
    was when there is nothing to write: the manifest returned is then empty.
    """
    with building_dataset(out, overwrite) as scratch:
        result = _build(
            store, predictions, scratch, merge, val_fraction, test_fraction, tokenizer, progress
        )
    if not len(result.manifest):
        return ImportResult(Manifest(out, []), result.report)
    return ImportResult(Manifest.load(out), result.report)


def _build(
    store: MonitoringStore,
    predictions: Sequence[StoredPrediction],
    out: Path,
    merge: Sequence[Path],
    val_fraction: float,
    test_fraction: float,
    tokenizer: Tokenizer | None,
    progress: Callable[[int], None] | None,
) -> ImportResult:
    """The dataset of :func:`build_feedback_dataset`, written into the scratch folder ``out``."""
    report = ImportReport(SOURCE)
    writer = DatasetWriter(out, SOURCE, report, tokenizer or Tokenizer())
    chosen = corrected(predictions)
    kept = {p.request_id for p in chosen}
    latest = {p.image_sha256: p.request_id for p in chosen}
    for p in predictions:
        if p.correction is not None and p.request_id not in kept:
            later = latest[p.image_sha256]
            report.skip(f"request {p.request_id}", f"image corrected again later, in {later}")
    for p in chosen:
        where = f"request {p.request_id}"
        # typed text: a tab, doubled spaces or an accent typed as two code points (as some
        # keyboards send it) is what scoring normalises too, not a character to learn
        text = writer.check(where, normalise(p.correction or ""))
        image = _image(store, p, report, where) if text is not None else None
        if image is not None and text is not None:
            group = p.image_sha256 or p.request_id
            meta = {
                "request_id": p.request_id,
                # the photo as the store (and `quill monitor export`) names it: how a merged
                # annotation of the same page is found
                "image_sha256": p.image_sha256,
                "model_version": p.model_version,
                "runtime": p.runtime,
                "model_text": p.text,
                "client": p.client,
                "flag": p.flag,
                "created_at": p.created_at.isoformat(),
            }
            found = _found_lines(p)
            # a page by what was typed or by what the model found on it: a two-line photo
            # corrected on one line is still no line image
            page = "\n" in text or len(found) > 1
            writer.add_crop(
                p.request_id,
                image,
                text,
                group=group,
                kind="paragraph" if page else "line",
                meta=meta,
            )
            if page:
                _add_page_lines(writer, report, where, p, found, image, text, group, meta)
        if progress:
            progress(1)
    result = writer.finish(val_fraction=val_fraction, test_fraction=test_fraction)
    if merge:
        result.manifest = _merge(result.manifest, merge, report)
    return result


def _add_page_lines(
    writer: DatasetWriter,
    report: ImportReport,
    where: str,
    p: StoredPrediction,
    found: list[dict],
    image: Image.Image,
    text: str,
    group: str,
    meta: dict,
) -> None:
    """One line sample per line of a corrected page, paired in order with the lines the
    model found there; a correction whose lines do not pair up is said in the report (the
    page sample stays)."""
    typed = text.split("\n")
    if len(typed) != len(found):
        report.skip(
            f"{where} (its lines)",
            f"the correction has {len(typed)} lines and the model found {len(found)}: kept as "
            "a page sample only (correct a page line by line to get line samples)",
        )
        return
    boxes = [_box(line["box"]) for line in found]
    for number, (line_text, crop, box) in enumerate(
        zip(typed, _line_images(image, boxes), boxes, strict=True), start=1
    ):
        line_meta = {
            **meta,
            "line": number,
            "box": list(box),
            "model_text": found[number - 1].get("text"),
        }
        writer.add_crop(
            f"{p.request_id}-line{number:02d}",
            crop,
            line_text,
            group=group,
            kind="line",
            meta=line_meta,
        )


def _found_lines(p: StoredPrediction) -> list[dict]:
    """The lines the model found on the image, each with its text and box."""
    return [line for line in p.lines or [] if isinstance(line, dict) and line.get("box")]


def _box(values: list) -> tuple[int, int, int, int]:
    """A stored line box (left, top, right, bottom) as the integers the segmenter gives."""
    left, top, right, bottom = (int(v) for v in values)
    return left, top, right, bottom


def _line_images(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[Image.Image]:
    """The lines at ``boxes`` (left, top, right, bottom) as the model read them: cut again by
    the segmenter (straightened, at full resolution) when it finds the same boxes, else
    cropped by their boxes (what the user saw drawn on the page)."""
    segments = segment_lines(image)
    if [segment.box for segment in segments] == boxes:
        return [segment.image for segment in segments]
    return [image.crop(box) for box in boxes]


def _image(
    store: MonitoringStore, p: StoredPrediction, report: ImportReport, where: str
) -> Image.Image | None:
    try:
        data = store.image_bytes(p)
    except FileNotFoundError as exc:
        report.skip(where, str(exc))
        return None
    if data is None:
        report.skip(where, "image not retained (privacy setting or purged)")
        return None
    try:
        return load_image(data)
    except ImageError as exc:
        report.skip(where, str(exc))
        return None


def _merge(manifest: Manifest, others: Sequence[Path], report: ImportReport) -> Manifest:
    """Copy other datasets' samples in, keeping their source, split and group, except that
    samples of one image end in one group and one split (:func:`_one_split_per_image`)."""
    samples = list(manifest.samples)
    taken = {Path(s.image).name for s in samples}
    for other_dir in others:
        other = Manifest.load(other_dir)
        for sample in other:
            source = other.path_of(sample)
            if not source.is_file():
                report.skip(f"{other_dir}: {sample.image}", "image file missing")
                continue
            name = _unique_name(f"{other_dir.name}-{source.name}", taken)
            shutil.copyfile(source, manifest.root / "images" / name)
            samples.append(replace(sample, image=f"images/{name}"))
            report.loaded[sample.kind] += 1
    merged = Manifest(manifest.root, _one_split_per_image(samples, report))
    merged.save()
    report_path = manifest.root / REPORT_NAME
    report_path.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    return merged


def _one_split_per_image(samples: list[Sample], report: ImportReport) -> list[Sample]:
    """The samples with those of one image in one group and one split.

    The loop the docs describe (``monitor export``, Label Studio, ``annotate import``,
    ``feedback-dataset --merge``) brings the same page back twice: as the user's corrected
    photo (group: its hash) and as the annotated task (group ``labelstudio:PROJECT:TASK``),
    each split on its own, so a page could be trained on and tested on. Samples sharing an
    image (:func:`_image_keys`) or a group are put in the first of their groups (sorted) and
    its split, and the report says so.
    """
    parent = list(range(len(samples)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first: dict[str, int] = {}
    page_hashes: dict[str, str | None] = {}
    for index, sample in enumerate(samples):
        keys = {f"image:{key}" for key in _image_keys(sample, page_hashes)}
        if sample.group:
            keys.add(f"group:{sample.group}")
        for key in keys:
            parent[root(index)] = root(first.setdefault(key, index))
    members: dict[int, list[int]] = {}
    for index in range(len(samples)):
        members.setdefault(root(index), []).append(index)
    result = list(samples)
    for indices in members.values():
        groups = sorted({samples[i].group for i in indices if samples[i].group})
        if len(groups) < 2 and len({samples[i].split for i in indices}) < 2:
            continue
        group = groups[0] if groups else ""
        split = next(samples[i].split for i in indices if samples[i].group == group)
        for i in indices:
            result[i] = replace(samples[i], group=group, split=split)
        report.notes.append(
            f"groups {', '.join(groups)} hold the same image (a corrected photo that was "
            f"also annotated, or a copy): all are put in group {group}, {split}, so no image "
            "is on both sides of the split"
        )
    return result


def _image_keys(sample: Sample, page_hashes: dict[str, str | None]) -> set[str]:
    """The SHA-256 of the images a sample was cut from or is: its own file, the photo a
    feedback sample records (``meta.image_sha256``; its group in datasets made before it
    was recorded), and the page an annotation was cut from (``meta.page``: the file's hash,
    or its name when it is gone and named by its hash, as ``monitor export`` names it)."""
    keys = {sample.sha256}
    photo = sample.meta.get("image_sha256")
    if isinstance(photo, str):
        keys.add(photo)
    elif sample.source == SOURCE and sample.group:
        keys.add(sample.group)
    page = sample.meta.get("page")
    if isinstance(page, str) and page:
        if page not in page_hashes:
            page_hashes[page] = _page_hash(Path(page))
        hashed = page_hashes[page]
        if hashed:
            keys.add(hashed)
    return keys


def _page_hash(path: Path) -> str | None:
    """The SHA-256 of a page image: of its bytes, else the hash its name gives."""
    try:
        return file_sha256(path)
    except OSError:
        return path.stem if _SHA256.fullmatch(path.stem) else None


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        stem, dot, suffix = name.rpartition(".")
        candidate = f"{stem}-{number}.{suffix}" if dot else f"{name}-{number}"
    taken.add(candidate)
    return candidate
