"""``quill monitor feedback-dataset``: what users corrected becomes a dataset version.

A correction typed under a prediction is a label for the image the user sent: no
annotation round needed. Each corrected, still-retained image becomes one sample with
``source="feedback"`` in a dataset folder (images + ``manifest.jsonl``), split by image hash
(the same photo sent twice lands on one side), ready for ``quill train`` to mix in by
weight. Dataset folders from ``quill annotate import`` can be merged into the same version.

People photograph pages, and a line model learns from lines: a corrected page whose
correction has one line for each line the model found also gives one line sample per line
(the line as the model read it, cut from the page again by the segmenter, or by its box),
beside the page sample. So corrections typed in the web app teach ``quill adapt`` and
``quill train`` the user's own hand, not only single-line photos.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from PIL import Image

from quill.data.manifest import Manifest
from quill.data.readers.common import REPORT_NAME, DatasetWriter, ImportReport, ImportResult
from quill.evaluation.normalise import normalise
from quill.models.segment import segment_lines
from quill.monitoring.records import StoredPrediction
from quill.monitoring.store import MonitoringStore
from quill.preprocess import ImageError, load_image
from quill.vocab import Tokenizer

SOURCE = "feedback"


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
    merge: Sequence[Path] = (),
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    tokenizer: Tokenizer | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Write the corrected predictions (and the samples of ``merge`` datasets) to ``out``.

    Unusable corrections (no image kept, unreadable image, characters outside the
    vocabulary) and corrections of an image corrected again later are recorded in the report
    with the request id, never silently dropped.
    """
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
    """Copy other datasets' samples in, keeping their source, split and group."""
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
    merged = Manifest(manifest.root, samples)
    merged.save()
    report_path = manifest.root / REPORT_NAME
    report_path.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    return merged


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        stem, dot, suffix = name.rpartition(".")
        candidate = f"{stem}-{number}.{suffix}" if dot else f"{name}-{number}"
    taken.add(candidate)
    return candidate
