"""The IAM Handwriting Database in its original layout: ``forms/*.png`` + ``xml/*.xml``.

Each form is a scanned page: a machine-printed prompt on top and the writer's handwritten copy
below. Its XML lists the handwritten lines with their ``text`` and the bounding boxes of each
word's connected components (``word/cmp``); a line's box is the union of its components, the
paragraph is the union of its lines (the handwritten part only, as in the reference system).
Coordinates refer to the full-resolution scan; downsampled copies (the reference system's
mirror halves them) are scaled through the form's declared ``width``/``height``.

Splits follow the Large Writer Independent Text Line Recognition task lists (``trainset.txt``,
``validationset1.txt``, ``validationset2.txt``, ``testset.txt``) when they are found under the
source, so results compare with published ones; otherwise forms are split by writer.
"""

from __future__ import annotations

import html
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Collection
from pathlib import Path

from quill.data.manifest import Split
from quill.data.readers.common import (
    KINDS,
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    Kind,
    progress,
    require_directory,
)
from quill.data.readers.geometry import bounding_box, box_polygon, union_box
from quill.data.readers.layout import LayoutLine, LayoutRegion, PageLayout, extract_page
from quill.data.readers.xmlutil import (
    LayoutError,
    float_attr,
    number_problem,
    page_size,
    parse_without_namespaces,
)
from quill.vocab import Tokenizer

#: Task list file -> split. Both validation lists are validation data.
SPLIT_LISTS: dict[str, Split] = {
    "trainset.txt": "train",
    "validationset1.txt": "val",
    "validationset2.txt": "val",
    "testset.txt": "test",
}
FORM_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: The attributes of a word component's box.
CMP_BOX = ("x", "y", "width", "height")
#: Margin around a line's components, as a fraction of the median component height; kept
#: below half the gap to the next line so neighbours' strokes stay out.
LINE_PADDING = 0.25


def form_text(value: str) -> str:
    """An IAM ``text`` attribute as plain text.

    The XML parser already turned ``&quot;`` into ``"``; some copies of IAM escape twice
    (``&amp;quot;``), which leaves a literal ``&quot;`` that must be unescaped once more.

    >>> form_text("&quot;Hello&quot; &amp; bye")
    '"Hello" & bye'
    >>> form_text('5 & 6')
    '5 & 6'
    """
    return html.unescape(value)


def parse_iam_form(path: Path, forms: dict[str, Path]) -> PageLayout:
    """One IAM form XML as a layout with a single region (the handwritten part).

    ``forms`` maps form id to image path. Raises :class:`LayoutError` for a non-IAM file.
    """
    root = parse_without_namespaces(path)
    if root.tag != "form" or root.find("handwritten-part") is None:
        raise LayoutError("not an IAM form XML file (expected <form> with <handwritten-part>)")
    form_id = root.get("id") or path.stem
    lines = [_line(element) for element in root.iterfind("handwritten-part/line")]
    _pad_lines(lines)
    boxes = [line.polygon for line in lines if line.polygon]
    size = page_size(root, "width", "height")
    return PageLayout(
        xml=path,
        image=forms.get(form_id),
        image_name=f"{form_id}.png",
        page_id=form_id,
        regions=[LayoutRegion("handwritten-part", lines, union_box(boxes) if boxes else [])],
        size=size,
        meta={"form": form_id, "writer": root.get("writer-id", "")},
    )


def _line(element: ET.Element) -> LayoutLine:
    """A handwritten line, boxed by its words' components; without a box (and saying why)
    when a component's box is not numbers: read as 0, it cut a sliver of the line."""
    line = LayoutLine(id=element.get("id", ""), text=form_text(element.get("text", "")))
    components = []
    for cmp in element.iterfind("word/cmp"):
        box = [float_attr(cmp, name) for name in CMP_BOX]
        if None in box:
            missing = ", ".join(name for name in CMP_BOX if name not in cmp.attrib)
            problem = number_problem(cmp, CMP_BOX) or f"no {missing}"
            line.problem = f"a word component's box is unusable: {problem}"
            return line
        components.append(box_polygon(*box))  # type: ignore[arg-type]
    line.polygon = union_box(components) if components else []
    return line


def _pad_lines(lines: list[LayoutLine]) -> None:
    """Grow each line box by a margin, vertically no further than halfway to its neighbours.

    IAM boxes hug the ink; without a margin, ascenders and descenders touch the crop edge.
    """
    boxed = [line for line in lines if line.polygon]
    if not boxed:
        return
    boxes = [bounding_box(line.polygon) for line in boxed]
    margin = LINE_PADDING * statistics.median(bottom - top for _, top, _, bottom in boxes)
    for i, (line, (left, top, right, bottom)) in enumerate(zip(boxed, boxes, strict=True)):
        above = (top - boxes[i - 1][3]) / 2 if i > 0 else margin
        below = (boxes[i + 1][1] - bottom) / 2 if i + 1 < len(boxes) else margin
        pad_top, pad_bottom = max(0.0, min(margin, above)), max(0.0, min(margin, below))
        line.polygon = box_polygon(
            left - margin,
            top - pad_top,
            right - left + 2 * margin,
            bottom - top + pad_top + pad_bottom,
        )


def find_split_lists(root: Path) -> dict[str, Split]:
    """Form id -> split from the task lists under ``root`` ({} when there are none).

    The lists name lines (``a01-000u-00``); a form's id is their first two parts.
    """
    splits: dict[str, Split] = {}
    for name, split in SPLIT_LISTS.items():
        for path in sorted(root.rglob(name)):
            for line_id in path.read_text(encoding="utf-8", errors="replace").split():
                splits["-".join(line_id.split("-")[:2])] = split
    return splits


def _form_images(src: Path) -> dict[str, Path]:
    """Form id -> scan, from ``forms*/`` folders (or anywhere under ``src``)."""
    folders = [p for p in sorted(src.glob("forms*")) if p.is_dir()] or [src]
    return {
        path.stem: path
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in FORM_EXTENSIONS
    }


def read_iam(
    src: Path,
    out: Path,
    *,
    kinds: Collection[Kind] = KINDS,
    tokenizer: Tokenizer | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_lists: Path | None = None,
    show_progress: bool = False,
) -> ImportResult:
    """Import IAM lines and paragraphs from an IAM folder (``forms*/`` and ``xml/``).

    With the task lists (under ``src`` or ``split_lists``) their splits are used and forms
    they leave out are reported and skipped; without them forms are split by writer.
    """
    src = require_directory(Path(src), "IAM folder")
    xml_dir = src / "xml" if (src / "xml").is_dir() else src
    xml_files = sorted(xml_dir.rglob("*.xml"))
    if not xml_files:
        raise DatasetError(f"no IAM XML files under {xml_dir} (expected xml/*.xml)")
    forms = _form_images(src)
    official = find_split_lists(
        require_directory(Path(split_lists), "split lists folder") if split_lists else src
    )
    report = ImportReport(f"iam:{src}")
    writer = DatasetWriter(out, "iam", report, tokenizer)
    for path in progress(xml_files, "IAM forms", len(xml_files), show_progress):
        label = path.relative_to(src).as_posix()
        try:
            layout = parse_iam_form(path, forms)
        except LayoutError as exc:
            report.skip(label, str(exc))
            continue
        layout.label = label
        split = official.get(layout.page_id)
        if official and split is None:
            report.skip(label, "form is in none of the task split lists (trainset, ...)")
            continue
        writer_id = layout.meta["writer"] or layout.page_id
        extract_page(layout, writer, kinds, group=f"writer-{writer_id}", split=split)
    return writer.finish(val_fraction=val_fraction, test_fraction=test_fraction)
