"""Fixtures: pages with text drawn at known rotated boxes, and Label Studio exports.

Pages are drawn with PIL alone (render a line, ``Image.rotate`` it, paste it so its top-left
corner lands on the box's corner), independently of ``quill.annotation.geometry``, so the
geometry is checked against ink that is really there.

Exports follow Label Studio's documented JSON export schema: per task ``id``, ``data``,
``annotations[]`` (``id``, ``result[]``, ``was_cancelled``, ``ground_truth``,
``created_at``/``updated_at``, ``completed_by``), ``predictions[]``; per result ``id``,
``type``, ``from_name``, ``to_name``, ``original_width``, ``original_height``,
``image_rotation``, ``origin`` and ``value`` with ``x, y, width, height`` in percent,
``rotation`` in degrees and ``rectanglelabels`` or ``text``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from quill.annotation.geometry import Box

PAPER = (236, 230, 214)
INK = (25, 25, 90)


@dataclass
class DrawnLine:
    """A line written on a page: its text, its box, and its ink (page-sized bool mask)."""

    text: str
    box: Box
    mask: np.ndarray  # (H, W) bool: where this line's ink is on the page
    upright: np.ndarray  # (h, w) bool: the same ink before rotation, as the crop should be


def render_line(text: str, size: int = 30, pad: int = 6) -> Image.Image:
    """The line's ink as an "L" image (255 = ink) with room for ascenders and descenders."""
    font = ImageFont.load_default(size=size)
    ascent, descent = font.getmetrics()
    width = math.ceil(font.getlength(text)) + 2 * pad
    image = Image.new("L", (width, ascent + descent + 2 * pad), 0)
    ImageDraw.Draw(image).text(
        (pad, pad), text, fill=255, font=font, stroke_width=1, stroke_fill=255
    )
    return image


def place(ink: Image.Image, x: float, y: float, rotation: float, page_size: tuple[int, int]):
    """Paste ``ink`` turned ``rotation`` degrees clockwise so its top-left lands on (x, y)."""
    w, h = ink.size
    turned = ink.rotate(-rotation, expand=True, resample=Image.Resampling.BICUBIC)
    big_w, big_h = turned.size
    theta = math.radians(rotation)
    # Where the top-left corner ends up inside `turned` (PIL rotates about the centre).
    cx, cy = -w / 2, -h / 2
    corner_x = cx * math.cos(theta) - cy * math.sin(theta) + big_w / 2
    corner_y = cx * math.sin(theta) + cy * math.cos(theta) + big_h / 2
    layer = Image.new("L", page_size, 0)
    layer.paste(turned, (round(x - corner_x), round(y - corner_y)))
    return layer


def draw_page(
    specs: list[tuple[str, float, float, float]], size: tuple[int, int] = (900, 600)
) -> tuple[Image.Image, list[DrawnLine]]:
    """A page with each (text, x, y, rotation) written at that box."""
    page = Image.new("RGB", size, PAPER)
    lines = []
    for text, x, y, rotation in specs:
        ink = render_line(text)
        layer = place(ink, x, y, rotation, size)
        page.paste(Image.new("RGB", size, INK), (0, 0), layer)
        box = Box(x, y, ink.size[0], ink.size[1], rotation)
        lines.append(DrawnLine(text, box, np.asarray(layer) > 96, np.asarray(ink) > 96))
    return page, lines


def ink_of(image: Image.Image) -> np.ndarray:
    """Bool mask of inked pixels (far from the paper colour)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.abs(rgb - np.array(PAPER, dtype=np.float32)).sum(axis=2) > 200


# --- Label Studio export format -------------------------------------------------------------


def percent(box: Box, width: int, height: int) -> dict[str, float]:
    """The documented conversion: pixels / original size * 100 (rotation untouched)."""
    return {
        "x": box.x / width * 100,
        "y": box.y / height * 100,
        "width": box.width / width * 100,
        "height": box.height / height * 100,
        "rotation": box.rotation % 360,  # Label Studio writes 348 for -12
    }


def region(
    rid: str,
    box: Box | None,
    text: str | None,
    size: tuple[int, int],
    label: str = "Line",
    origin: str = "manual",
) -> list[dict[str, Any]]:
    """The results of one region: a rectanglelabels box and/or a textarea, sharing ``rid``."""
    width, height = size
    common = {
        "id": rid,
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "origin": origin,
    }
    results = []
    geometry = percent(box, width, height) if box is not None else {}
    if box is not None:
        results.append(
            {
                **common,
                "from_name": "label",
                "type": "rectanglelabels",
                "value": {**geometry, "rectanglelabels": [label]},
            }
        )
    if text is not None:
        results.append(
            {**common, "from_name": "transcription", "type": "textarea",
             "value": {**geometry, "text": [text]}}
        )  # fmt: skip
    return results


def annotation(
    aid: int,
    results: list[dict[str, Any]],
    updated_at: str = "2026-03-01T10:00:00.000000Z",
    was_cancelled: bool = False,
    ground_truth: bool = False,
    completed_by: int = 1,
) -> dict[str, Any]:
    return {
        "id": aid,
        "completed_by": completed_by,
        "result": results,
        "was_cancelled": was_cancelled,
        "ground_truth": ground_truth,
        "created_at": updated_at,
        "updated_at": updated_at,
        "draft_created_at": None,
        "lead_time": 42.5,
        "prediction": {},
        "result_count": len({r["id"] for r in results}),
        "unique_id": f"uid-{aid}",
        "import_id": None,
        "last_action": None,
        "task": None,
        "project": 1,
        "updated_by": completed_by,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def task(
    tid: int,
    data: dict[str, Any],
    annotations: list[dict[str, Any]] | None = None,
    predictions: list[dict[str, Any]] | None = None,
    project: int = 1,
) -> dict[str, Any]:
    anns = annotations or []
    for ann in anns:
        ann["task"] = tid
    return {
        "id": tid,
        "annotations": anns,
        "file_upload": None,
        "drafts": [],
        "predictions": predictions or [],
        "data": data,
        "meta": {},
        "created_at": "2026-03-01T09:00:00.000000Z",
        "updated_at": "2026-03-01T10:00:00.000000Z",
        "inner_id": tid,
        "total_annotations": len(anns),
        "cancelled_annotations": sum(a["was_cancelled"] for a in anns),
        "total_predictions": len(predictions or []),
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": project,
        "updated_by": None,
        "comment_authors": [],
    }


def write_export(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(tasks, indent=1))
    return path


@pytest.fixture
def ls() -> SimpleNamespace:
    """The export builders and drawing helpers above, for the tests of this package."""
    return SimpleNamespace(
        draw_page=draw_page,
        render_line=render_line,
        ink_of=ink_of,
        percent=percent,
        region=region,
        annotation=annotation,
        task=task,
        write_export=write_export,
        PAPER=PAPER,
    )


STANDIN_PATH = Path(__file__).with_name("standin_labelstudio.py")
TOKEN = "quill-test-token-0123456789"


def load_standin():
    """The stand-in server module (loaded by path: test folders are not packages)."""
    spec = importlib.util.spec_from_file_location("standin_labelstudio", STANDIN_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def standin(tmp_path) -> Iterator[SimpleNamespace]:
    """A stand-in Label Studio API on 127.0.0.1 (see standin_labelstudio.py): url, state."""
    module = load_standin()
    root = tmp_path / "docroot"
    root.mkdir()
    state = module.State(TOKEN, root)
    server = module.make_server(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield SimpleNamespace(url=f"http://{host}:{port}", state=state, root=root, token=TOKEN)
    finally:
        server.shutdown()
        server.server_close()
