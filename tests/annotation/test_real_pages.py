"""Real handwriting: Hooker letters' PAGE XML lines re-expressed as a Label Studio export.

Each line's polygon becomes what an annotator would draw: a rectangle turned to the slant of
the line's baseline. The import must find every line, keep the transcriptions, read the page
top to bottom in the order the PAGE XML gives, and cut crops that show ink.
"""

from __future__ import annotations

import math

import pytest

from quill.annotation import transcription
from quill.annotation.geometry import Box, enclosing_box
from quill.annotation.importer import ImportOptions, import_export
from quill.data.manifest import file_sha256
from quill.data.readers.pagexml import parse_pagexml
from quill.preprocess import PreprocessConfig, load_image, preprocess
from quill.vocab import Tokenizer


def line_box(polygon, baseline) -> Box:
    (x0, y0), (x1, y1) = baseline[0], baseline[-1]
    angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
    return enclosing_box([Box(x, y, 0, 0) for x, y in polygon], angle)


def single_region_pages(hooker_dir, count: int):
    pages = []
    for xml in sorted((hooker_dir / "pages").glob("*.xml")):
        layout = parse_pagexml(xml)
        if len(layout.regions) == 1 and layout.image is not None:
            pages.append(layout)
    return pages[:count]


def test_hooker_pages_round_trip(tmp_path, hooker_dir, ls):
    pages = single_region_pages(hooker_dir, 2)
    if not pages:
        pytest.skip("no single-region Hooker page")
    tokenizer = Tokenizer()
    tasks, expected, slants = [], {}, []
    for number, layout in enumerate(pages, 1):
        size = load_image(layout.image).size
        results = []
        lines = [line for line in layout.regions[0].lines if line.text.strip()]
        for line in reversed(lines):  # drawn bottom-up: order must come from the boxes
            box = line_box(line.polygon, line.baseline)
            slants.append(box.rotation)
            results += ls.region(line.id, box, line.text, size)
        rel = layout.image.relative_to(hooker_dir).as_posix()
        data = {"ocr": f"/data/local-files/?d={rel}", "sha256": file_sha256(layout.image)}
        tasks.append(ls.task(number, data, [ls.annotation(number, results)]))
        texts = [transcription.clean(line.text) for line in lines]
        expected[number] = [t for t in texts if not tokenizer.unknown_characters(t)]
    export = ls.write_export(tmp_path / "export.json", tasks)

    result = import_export(export, tmp_path / "out", ImportOptions(images_root=hooker_dir))

    assert any(abs(slant) > 0.5 for slant in slants), "real baselines are slanted"
    for number, texts in expected.items():
        lines = [s for s in result.manifest if s.kind == "line" and s.meta["task_id"] == number]
        assert [s.text for s in lines] == texts, f"page {number}: reading order or text differs"
        for sample in lines:
            ink = preprocess(result.manifest.path_of(sample), PreprocessConfig())
            assert (ink > 0.5).mean() > 0.02, sample.text
    assert sum(s.kind == "line" for s in result.manifest) == sum(map(len, expected.values()))
