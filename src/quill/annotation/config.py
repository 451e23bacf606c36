"""The Label Studio labeling config Quill's annotators use, and its check.

One image per task (variable ``$ocr``) with zoom and a rotate control; a ``Line`` rectangle
label (rotatable; no polygons: a line crop must stay a rectangle so it can be warped upright);
a transcription typed per region. The names below are the contract with
:mod:`quill.annotation.importer` and :mod:`quill.annotation.tasks`: change them here and both
follow, and :func:`validate_config` refuses a config whose names drifted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

from quill.errors import QuillError

#: Task variable holding the image URL (``data.ocr`` in tasks and exports).
IMAGE_VARIABLE = "ocr"
#: ``name`` of the Image tag: results' ``to_name``.
IMAGE_NAME = "image"
#: ``name`` of the RectangleLabels tag: the box results' ``from_name``.
LABEL_NAME = "label"
#: ``name`` of the per-region TextArea: the transcription results' ``from_name``.
TEXT_NAME = "transcription"
#: The one region label: a line of handwriting.
LINE_LABEL = "Line"

CONFIG_FILENAME = "labeling-config.xml"
INSTRUCTIONS_FILENAME = "instructions.html"


class LabelingConfigError(QuillError, ValueError):
    """A labeling config is not what the importer can read."""

    code = "labeling_config_invalid"


def labeling_config() -> str:
    """The labeling config XML, pretty-printed."""
    view = ET.Element("View")
    ET.SubElement(
        view,
        "Image",
        name=IMAGE_NAME,
        value=f"${IMAGE_VARIABLE}",
        zoom="true",
        zoomControl="true",
        rotateControl="true",
    )
    labels = ET.SubElement(
        view,
        "RectangleLabels",
        name=LABEL_NAME,
        toName=IMAGE_NAME,
        canRotate="true",
        strokeWidth="2",
    )
    ET.SubElement(labels, "Label", value=LINE_LABEL, background="#1f77b4")
    ET.SubElement(
        view,
        "TextArea",
        name=TEXT_NAME,
        toName=IMAGE_NAME,
        editable="true",
        perRegion="true",
        required="true",
        maxSubmissions="1",
        rows="1",
        placeholder="Type exactly what is written on this line",
        displayMode="region-list",
    )
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _one(root: ET.Element, tag: str, **attributes: str) -> ET.Element:
    """The single element ``tag`` of ``root`` whose attributes match, or a LabelingConfigError."""
    found = [
        el
        for el in root.iter(tag)
        if all(el.get(key) == value for key, value in attributes.items())
    ]
    if len(found) != 1:
        wanted = " ".join(f'{k}="{v}"' for k, v in attributes.items())
        raise LabelingConfigError(f"expected exactly one <{tag} {wanted}>, found {len(found)}")
    return found[0]


def validate_config(xml: str) -> None:
    """Raise LabelingConfigError unless ``xml`` is well formed and names what the importer
    reads.

    >>> validate_config(labeling_config())
    >>> validate_config("<View><Image name='img' value='$image'/></View>")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    quill.annotation.config.LabelingConfigError: expected exactly one <Image name="image" ...>, ...
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelingConfigError(f"labeling config is not well-formed XML: {exc}") from exc
    if root.tag != "View":
        raise LabelingConfigError(f"labeling config must start with <View>, not <{root.tag}>")
    image = _one(root, "Image", name=IMAGE_NAME, value=f"${IMAGE_VARIABLE}")
    if image.get("rotateControl") != "true":
        raise LabelingConfigError(
            '<Image> needs rotateControl="true" so sideways scans can be read'
        )
    labels = _one(root, "RectangleLabels", name=LABEL_NAME, toName=IMAGE_NAME)
    if labels.get("canRotate", "true") != "true":
        raise LabelingConfigError("<RectangleLabels> must allow rotation (slanted lines)")
    _one(labels, "Label", value=LINE_LABEL)
    text = _one(root, "TextArea", name=TEXT_NAME, toName=IMAGE_NAME)
    if text.get("perRegion") != "true":
        raise LabelingConfigError(
            '<TextArea> must have perRegion="true": one transcription per line box'
        )
    if list(root.iter("PolygonLabels")) or list(root.iter("Polygon")):
        raise LabelingConfigError("polygons are not supported: draw one rotated rectangle per line")


def instructions_html() -> str:
    """The annotator instructions (HTML: Label Studio shows it as the project instructions)."""
    return resources.files("quill.annotation").joinpath(INSTRUCTIONS_FILENAME).read_text("utf-8")


def write_config(out_dir: Path) -> list[Path]:
    """Write the labeling config and the instructions into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = labeling_config()
    validate_config(config)
    paths = [out_dir / CONFIG_FILENAME, out_dir / INSTRUCTIONS_FILENAME]
    paths[0].write_text(config, encoding="utf-8")
    paths[1].write_text(instructions_html(), encoding="utf-8")
    return paths
