"""A Label Studio JSON export -> a Quill dataset of line crops and paragraph samples.

For each task: find its image under ``images_root``, choose one annotation
(:func:`quill.annotation.agreement.choose`), turn its regions into pixel boxes on the image
as loaded (EXIF applied, as the browser showed it), warp each box upright into a line crop
and, when every line of the page is usable, cut the page's lines out as one paragraph sample
(lines top to bottom, joined by "\\n"; everything outside the line boxes painted paper, so
the image shows exactly the text of its label). Splits are assigned by task, so a page's
lines and its paragraph always land in the same split.

Samples go to a scratch dataset first: only once every task is read is it known whether
another task labelled the very same pixels (the same image shown twice, the same box)
differently. Such contradicting samples are all left out, since the import cannot tell which
reading is right; samples that agree are kept once (:meth:`_TaskImporter.settle`).

Nothing is dropped silently: every task, line or paragraph left out is recorded with a
reason code (see :data:`REASONS`) in ``import-report.json`` and the command's summary.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from PIL import Image

from quill.annotation import agreement, transcription
from quill.annotation.config import IMAGE_VARIABLE
from quill.annotation.geometry import (
    Box,
    crop_box,
    enclosing_box,
    mask_outside,
    percent_to_box,
    share_on_image,
    signed_angle,
)
from quill.annotation.regions import Region, parse_regions
from quill.data.manifest import Manifest, building_dataset, file_sha256
from quill.data.readers.common import REPORT_NAME, DatasetWriter, ImportReport
from quill.errors import QuillError
from quill.preprocess import ImageError, load_image, paper_colour
from quill.vocab import Tokenizer

SOURCE = "labelstudio"

#: Why something was left out; the keys are stable (tests and scripts count them).
REASONS = {
    "no_annotations": "task never annotated",
    "all_cancelled": "every annotation was skipped/cancelled",
    "no_regions": "annotation submitted with no line boxes",
    "bad_task": "task has no usable image reference, or data/annotations/result of wrong type",
    "image_not_found": "image not found under the images root",
    "image_unreadable": "image cannot be decoded",
    "image_changed": "image differs from the one annotated (sha256)",
    "size_mismatch": "image shape differs from the one annotated",
    "low_agreement": "annotators disagree more than --min-agreement allows",
    "no_second_annotation": "--min-agreement set but no other annotator's annotation",
    "not_a_line": "region label is not Line",
    "not_a_box": "region drawn as a polygon, brush, ellipse or keypoints, not a Line box",
    "bad_region": "region result malformed (value not an object, geometry not a number or absurd)",
    "text_without_box": "transcription without a box",
    "box_without_text": "box without a transcription",
    "tiny_box": "box smaller than 2 pixels",
    "outside_image": "box mostly outside the image",
    "illegible": "text marks illegible characters (#)",
    "unknown_characters": "characters outside the vocabulary",
    "incomplete_paragraph": "a line of the page was left out, so the paragraph is too",
    "conflicting_label": "the same pixels (image and box) have another text elsewhere",
    "duplicate": "the same pixels with the same text came earlier: kept once",
}
#: Relative difference of aspect ratios tolerated between the annotated and the found image.
ASPECT_TOLERANCE = 0.01
#: Share of a box's area that must lie on the image: a rotated box may poke past an edge
#: (that part of the crop is paper), but a box mostly off the page would be a blank crop
#: labelled with text.
MIN_SHARE_ON_IMAGE = 0.75
#: A column of a CSV or TSV export's header (``ocr``, ``annotation_id``, maybe quoted).
COLUMN_NAME = re.compile(r'"?[\w.-]+"?')


class LabelStudioExportError(QuillError, ValueError):
    """The export file as a whole cannot be read."""

    code = "label_studio_export_invalid"


@dataclass
class ImportOptions:
    """How strict the import is; the defaults keep only clean, fully legible labels."""

    images_root: Path
    min_agreement: float = 0.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    keep_illegible: bool = False
    keep_unknown: bool = False
    mask_paragraphs: bool = True
    tokenizer: Tokenizer = field(default_factory=Tokenizer)


@dataclass
class Line:
    """One line region read from an annotation, in pixels of the loaded image."""

    region: Region
    box: Box
    text: str
    problem: str | None = None
    detail: str = ""


@dataclass
class LabelStudioImport:
    """The outcome: the saved manifest, the data layer's report, and counts per reason."""

    manifest: Manifest
    report: ImportReport
    reasons: Counter[str]
    tasks: int
    tasks_used: int


def load_export(path: Path) -> list[dict[str, Any]]:
    """The tasks of a Label Studio JSON export, with a clear error for other formats."""
    if path.is_dir():
        raise LabelStudioExportError(f"{path} is a folder; give the export's JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LabelStudioExportError(f"no export at {path}") from exc
    except UnicodeDecodeError as exc:
        raise LabelStudioExportError(f"{path} is not JSON: {exc}") from exc
    except OSError as exc:
        raise LabelStudioExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        table = _table_export(path, text)
        if table:
            raise LabelStudioExportError(
                f"{path} is a {table} export; export the project as JSON (Export > JSON) instead"
            ) from exc
        raise LabelStudioExportError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(task, dict) for task in data):
        raise LabelStudioExportError(
            f"{path}: a Label Studio JSON export is a list of task objects"
        )
    for task in data:
        if "data" not in task and "annotations" not in task:
            raise LabelStudioExportError(
                f"{path}: task {task.get('id', '?')} has no 'data'/'annotations': this looks "
                "like a JSON-MIN export; export the project as 'JSON' instead"
            )
    return data


def _table_export(path: Path, text: str) -> str | None:
    """Which of Label Studio's table exports (CSV, TSV) ``text``, not JSON, is, or None: the
    suffix says so, or the first line is a header of separated column names."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv"):
        return suffix.upper()
    header = text.lstrip("\ufeff").partition("\n")[0].rstrip("\r")
    for separator, name in (("\t", "TSV"), (",", "CSV")):
        names = header.split(separator)
        if len(names) > 1 and all(COLUMN_NAME.fullmatch(n) for n in names):
            return name
    return None


def resolve_image(data: dict[str, Any], images_root: Path) -> tuple[Path | None, list[Path]]:
    """The local file a task's image reference points to, and the candidates tried.

    Understands what ``quill annotate tasks`` writes (``image_path``), local-files URLs
    (``/data/local-files/?d=...``), files uploaded through the UI (``/data/upload/<project>/
    <8 hex>-<name>``), http(s) URLs (their path, then their file name) and plain paths.
    """
    candidates: list[Path] = []
    if data.get("image_path"):
        candidates.append(images_root / str(data["image_path"]))
    reference = str(data.get(IMAGE_VARIABLE) or "")
    parsed = urlparse(reference)
    query = parse_qs(parsed.query)
    if "d" in query:
        candidates.append(images_root / query["d"][0])
    path = unquote(parsed.path)
    if path.startswith("/data/upload/"):
        name = Path(path).name
        stem, dash, rest = name.partition("-")
        if dash and len(stem) == 8:
            candidates.append(images_root / rest)
        candidates.append(images_root / name)
    elif parsed.scheme in ("http", "https"):
        candidates += [images_root / path.lstrip("/"), images_root / Path(path).name]
    elif reference and "d" not in query:
        candidates.append(images_root / reference)  # an absolute reference stays absolute
    for candidate in candidates:
        if candidate.is_file():
            return candidate, candidates
    return None, candidates


def read_lines(
    annotation: dict[str, Any], size: tuple[int, int], options: ImportOptions
) -> tuple[list[Line], list[tuple[str, str, str]]]:
    """Line regions of one annotation on an image of ``size``, with problems marked.

    Returns the lines that have a box, and (region id, reason code, detail) for the regions
    that cannot be placed on the page.
    """
    regions, _ignored = parse_regions(annotation.get("result") or [])
    lines: list[Line] = []
    boxless: list[tuple[str, str, str]] = []
    for region in regions:
        if region.malformed:
            boxless.append((region.id, "bad_region", region.malformed))
            continue
        if not region.is_line:
            boxless.append((region.id, "not_a_line", f"label {region.labels}"))
            continue
        text = transcription.clean(region.typed or [])
        if region.shape is not None:
            read = f", text {text!r}" if text else ""
            boxless.append((region.id, "not_a_box", f"drawn as {region.shape}{read}"))
            continue
        if region.geometry is None:
            boxless.append((region.id, "text_without_box", repr(text)))
            continue
        line = Line(region, percent_to_box(region.geometry, *size), text)
        _check(line, size, options)
        lines.append(line)
    return lines, boxless


def _check(line: Line, size: tuple[int, int], options: ImportOptions) -> None:
    """Mark why ``line`` on an image of ``size`` cannot be a training label (or unescape its
    text if it can)."""
    if min(line.box.width, line.box.height) < 2:
        line.problem, line.detail = "tiny_box", f"{line.box.width:.1f}x{line.box.height:.1f} px"
    elif (share := share_on_image(line.box, *size)) < MIN_SHARE_ON_IMAGE:
        line.problem, line.detail = "outside_image", f"{share:.0%} of the box on the image"
    elif not line.text:
        line.problem = "box_without_text"
    elif transcription.is_illegible(line.text) and not options.keep_illegible:
        line.problem, line.detail = "illegible", repr(line.text)
    else:
        line.text = transcription.unescape(line.text)
        unknown = options.tokenizer.unknown_characters(line.text)
        if unknown and not options.keep_unknown:
            shown = ", ".join(repr(c) for c in unknown)
            line.problem, line.detail = "unknown_characters", f"{shown} in {line.text!r}"


def reading_order(lines: list[Line]) -> tuple[list[Line], float]:
    """Lines top to bottom along the page's own slant, and that slant (degrees).

    The slant is the median of the boxes' rotations, so a photo taken at an angle still
    reads in order; lines are sorted by their centre's distance down the slanted page.
    """
    if not lines:
        return [], 0.0
    angle = statistics.median(signed_angle(line.box.rotation) for line in lines)
    theta = math.radians(angle)

    def key(line: Line) -> tuple[float, float]:
        cx, cy = line.box.center()
        down = -cx * math.sin(theta) + cy * math.cos(theta)
        along = cx * math.cos(theta) + cy * math.sin(theta)
        return round(down, 1), along

    return sorted(lines, key=key), angle


def paragraph_text(lines: list[Line]) -> str:
    return "\n".join(line.text for line in reading_order(lines)[0] if line.text)


def _wrong_type(task: dict[str, Any]) -> str | None:
    """Which part of ``task`` has a type no Label Studio export gives it, or None.

    The file is valid JSON all the same, so :func:`load_export` let it through; one odd task
    must not stop the import of the others.
    """
    annotations = task.get("annotations")
    fields = [("data", task.get("data"), dict), ("annotations", annotations, list)]
    if isinstance(annotations, list):
        fields += [
            (f"annotation {a.get('id')} result", a.get("result"), list)
            for a in annotations
            if isinstance(a, dict)
        ]
    for name, value, kind in fields:
        if value is not None and not isinstance(value, kind):
            wanted = "an object" if kind is dict else "a list"
            return f"{name} is {type(value).__name__}, not {wanted}"
    return None


@dataclass
class _Staged:
    """Where a sample waiting in the scratch dataset came from."""

    where: str
    #: The task's position in the export (hand-made exports may repeat or omit ids).
    position: int


class _TaskImporter:
    """Imports the tasks of one export into one DatasetWriter, by way of a scratch one."""

    def __init__(self, writer: DatasetWriter, scratch: DatasetWriter, options: ImportOptions):
        self.writer = writer
        self.scratch = scratch
        self.options = options
        self.reasons: Counter[str] = Counter()
        self.group_of_image: dict[str, str] = {}
        self.staged: list[_Staged] = []
        self.used = 0

    def skip(self, where: str, code: str, detail: str = "") -> None:
        self.reasons[code] += 1
        reason = f"{code}: {REASONS[code]}" + (f" ({detail})" if detail else "")
        self.writer.report.skip(where, reason)

    def run(self, index: int, task: dict[str, Any]) -> None:
        task = {"id": f"#{index}", **task}  # hand-made exports may lack ids: use the position
        where = f"task {task['id']}"
        wrong = _wrong_type(task)
        if wrong:
            return self.skip(where, "bad_task", wrong)
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if not annotations:
            extra = "only model predictions" if task.get("predictions") else ""
            return self.skip(where, "no_annotations", extra)
        chosen = agreement.choose(annotations)
        if chosen is None:
            return self.skip(where, "all_cancelled", f"{len(annotations)} annotation(s)")
        if not chosen.get("result"):
            return self.skip(where, "no_regions", f"annotation {chosen.get('id')}")
        data = task.get("data") or {}
        if not (data.get(IMAGE_VARIABLE) or data.get("image_path")):
            return self.skip(where, "bad_task", f"no data.{IMAGE_VARIABLE}")
        image = self._open(where, data)
        if image is None or not self._same_shape(where, chosen, image.size):
            return
        lines, boxless = read_lines(chosen, image.size, self.options)
        accepted, score = self._agreement(where, chosen, annotations, image.size, lines)
        if accepted:
            self._write(index, task, chosen, image, lines, boxless, score)

    def _open(self, where: str, data: dict[str, Any]) -> Image.Image | None:
        try:
            path, tried = resolve_image(data, self.options.images_root)
        except ValueError as exc:  # a reference urlparse refuses, e.g. "http://[host"
            self.skip(where, "bad_task", f"{data.get(IMAGE_VARIABLE)!r}: {exc}")
            return None
        if path is None:
            shown = ", ".join(str(p) for p in tried) or "nothing to try"
            self.skip(where, "image_not_found", f"{data.get(IMAGE_VARIABLE)!r}; tried {shown}")
            return None
        digest = file_sha256(path)
        if data.get("sha256") and digest != data["sha256"]:
            self.skip(where, "image_changed", str(path))
            return None
        try:
            image = load_image(path)
        except ImageError as exc:
            self.skip(where, "image_unreadable", str(exc))
            return None
        image.info.update(quill_path=str(path), quill_sha256=digest)
        return image

    def _same_shape(self, where: str, annotation: dict[str, Any], size: tuple[int, int]) -> bool:
        """Percentages transfer to any resolution, but not to another aspect (or rotation)."""
        regions, _ = parse_regions(annotation.get("result") or [])
        for region in regions:
            if region.original_size is None:
                continue
            ow, oh = region.original_size
            if ow <= 0 or oh <= 0:
                continue
            if abs((size[0] / size[1]) / (ow / oh) - 1.0) > ASPECT_TOLERANCE:
                hint = " (EXIF orientation?)" if (ow, oh) == (size[1], size[0]) else ""
                detail = f"annotated {ow}x{oh}, found {size[0]}x{size[1]}{hint}"
                self.skip(where, "size_mismatch", detail)
                return False
        return True

    def _agreement(
        self,
        where: str,
        chosen: dict[str, Any],
        annotations: list[dict[str, Any]],
        size: tuple[int, int],
        lines: list[Line],
    ) -> tuple[bool, float | None]:
        """Whether the task passes --min-agreement, and its best agreement (None: one reader).

        A ground-truth annotation passes whatever the others say: a reviewer settled it.
        """
        others = agreement.second_readings(annotations, chosen)
        text = paragraph_text(lines)
        scores = [
            agreement.text_agreement(text, paragraph_text(read_lines(a, size, self.options)[0]))
            for a in others
        ]
        best = max(scores) if scores else None
        if self.options.min_agreement <= 0 or chosen.get("ground_truth"):
            return True, best
        if best is None:
            again = len(agreement.usable(annotations)) - 1  # all by the chosen one's annotator
            detail = f"{again} more by the same annotator, {agreement.annotator(chosen)}"
            self.skip(where, "no_second_annotation", detail if again else "")
            return False, None
        if best < self.options.min_agreement:
            self.skip(where, "low_agreement", f"{best:.3f} < {self.options.min_agreement}")
            return False, best
        return True, best

    def _group(self, task: dict[str, Any], image: Image.Image) -> str:
        project = task.get("project")
        group = f"{SOURCE}:{project}:{task.get('id')}" if project else f"{SOURCE}:{task.get('id')}"
        return self.group_of_image.setdefault(image.info["quill_sha256"], group)  # one split

    def _write(
        self,
        position: int,
        task: dict[str, Any],
        chosen: dict[str, Any],
        image: Image.Image,
        lines: list[Line],
        boxless: list[tuple[str, str, str]],
        score: float | None,
    ) -> None:
        """Stage the usable lines and, if the page is complete, its paragraph."""
        task_id = task.get("id")
        where = f"task {task_id}"
        for region_id, code, detail in boxless:
            self.skip(f"{where} region {region_id}", code, detail)
        # a transcription without a box, a region that cannot be read or one drawn as
        # another shape is text the paragraph would lack (a region labelled other than Line
        # is meant to be left out)
        missing_text = any(code != "not_a_line" for _, code, _ in boxless)
        if not lines:
            return self.skip(where, "no_regions", f"annotation {chosen.get('id')}")
        ordered, angle = reading_order(lines)
        group = self._group(task, image)
        paper = paper_colour(image, mode="RGB")  # the crops are RGB
        base = {
            "task_id": task_id,
            "project": task.get("project"),
            "annotation_id": chosen.get("id"),
            "completed_by": chosen.get("completed_by"),
            "updated_at": chosen.get("updated_at") or chosen.get("created_at"),
            "ground_truth": bool(chosen.get("ground_truth")),
            "agreement": None if score is None else round(score, 4),
            "page": image.info["quill_path"],
        }
        staged = 0
        for number, line in enumerate(ordered, 1):
            if line.problem:
                self.skip(f"{where} region {line.region.id}", line.problem, line.detail)
                continue
            meta = {**base, "region_id": line.region.id, "line": number, "box": _box(line.box)}
            self.scratch.add_crop(
                f"t{task_id}-l{number:02d}",
                crop_box(image, line.box, paper),
                line.text,
                group=group,
                kind="line",
                meta=meta,
            )
            self.staged.append(_Staged(f"{where} region {line.region.id}", position))
            staged += 1
        if staged < len(ordered) or missing_text:
            return self.skip(where, "incomplete_paragraph")
        boxes = [line.box for line in ordered]
        margin = 0.25 * statistics.median(b.height for b in boxes)
        page = mask_outside(image, boxes, paper) if self.options.mask_paragraphs else image
        outline = enclosing_box(boxes, angle, margin)
        self.scratch.add_crop(
            f"t{task_id}-page",
            crop_box(page, outline, paper),
            "\n".join(line.text for line in ordered),
            group=group,
            kind="paragraph",
            meta={**base, "lines": len(ordered), "box": _box(outline)},
        )
        self.staged.append(_Staged(where, position))

    def settle(self) -> None:
        """Copy the scratch samples into the dataset, leaving out contradictions and repeats.

        Samples with the same pixels (sha256: the same image, the same box) are one region
        read twice. If their texts differ there is no telling which reading is right, so none
        is kept, nor the paragraph of a page holding such a line (a reviewer settles it in
        Label Studio and the next export imports). If they agree, the first is kept once.
        """
        scratch = self.scratch.finish().manifest
        samples = list(zip(scratch, self.staged, strict=True))
        readings: defaultdict[str, list[tuple[_Staged, str]]] = defaultdict(list)
        for sample, staged in samples:
            readings[sample.sha256].append((staged, sample.text))
        kept: dict[str, str] = {}
        contested: set[int] = set()
        used: set[int] = set()
        for sample, staged in samples:
            others = [(o, text) for o, text in readings[sample.sha256] if text != sample.text]
            if sample.kind == "paragraph" and staged.position in contested:
                self.skip(staged.where, "incomplete_paragraph", "a line's label conflicts")
            elif others:
                named = "; ".join(f"{o.where} says {text!r}" for o, text in others)
                self.skip(staged.where, "conflicting_label", f"{sample.text!r}, but {named}")
                contested.add(staged.position)
            elif sample.sha256 in kept:
                self.skip(staged.where, "duplicate", f"kept from {kept[sample.sha256]}")
            else:
                kept[sample.sha256] = staged.where
                used.add(staged.position)
                self.writer.add_file(
                    scratch.path_of(sample),
                    sample.text,
                    group=sample.group,
                    kind=sample.kind,
                    meta=sample.meta,
                    copy=True,
                    where=staged.where,
                )
        self.used = len(used)


def _box(box: Box) -> list[float]:
    return [round(v, 2) for v in (box.x, box.y, box.width, box.height, box.rotation)]


def import_export(
    export: Path,
    out: Path,
    options: ImportOptions,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> LabelStudioImport:
    """Convert the export file ``export`` into a dataset at ``out``."""
    return import_tasks(load_export(export), str(export), out, options, overwrite, progress)


def import_tasks(
    tasks: list[dict[str, Any]],
    source: str,
    out: Path,
    options: ImportOptions,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> LabelStudioImport:
    """Convert exported ``tasks`` (read from ``source``) into a dataset at ``out``."""
    if not options.images_root.is_dir():
        raise LabelStudioExportError(f"images root {options.images_root} is not a directory")
    # built beside out and moved in only when it worked: an --overwrite that failed or was
    # interrupted lost the old dataset
    with building_dataset(out, overwrite) as folder:
        writer = DatasetWriter(folder, SOURCE, ImportReport(source), options.tokenizer)
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=folder) as scratch_dir:
            scratch = DatasetWriter(
                Path(scratch_dir), SOURCE, ImportReport(source), options.tokenizer
            )
            importer = _TaskImporter(writer, scratch, options)
            for index, task in enumerate(tasks):
                importer.run(index, task)
                if progress:
                    progress(1)
            importer.settle()
        result = writer.finish(
            val_fraction=options.val_fraction, test_fraction=options.test_fraction
        )
        report = result.report.to_dict()
        report.update(
            tasks=len(tasks),
            tasks_used=importer.used,
            reasons=dict(importer.reasons),
            dataset_version=result.manifest.version,
            policy={
                "annotation": "ground_truth first, else the most recently updated; cancelled "
                "ignored",
                "same_pixels": "conflicting texts: none kept; the same text: kept once",
                "min_agreement": options.min_agreement,
                "keep_illegible": options.keep_illegible,
                "keep_unknown": options.keep_unknown,
                "mask_paragraphs": options.mask_paragraphs,
            },
        )
        (folder / REPORT_NAME).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    manifest = Manifest.load(out) if len(result.manifest) else Manifest(out, [])
    return LabelStudioImport(manifest, result.report, importer.reasons, len(tasks), importer.used)
