"""Label Studio JSON export -> dataset: crops, paragraphs, policies and every skip reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.annotation.geometry import Box
from quill.annotation.importer import ImportOptions, LabelStudioExportError, import_export
from quill.data.manifest import Manifest, file_sha256

SIZE = (900, 600)
TEXTS = ["Kew, 3rd May", "my dear Asa Gray", "the seeds came"]


def save_page(tmp_path, ls, name="page1.png", slant=4.0):
    """A page with three lines at ``slant`` degrees, saved as PNG: (path, drawn lines)."""
    specs = [(text, 60 + 10 * i, 80 + 120 * i, slant) for i, text in enumerate(TEXTS)]
    image, lines = ls.draw_page(specs, SIZE)
    images = tmp_path / "images" / "scans"
    images.mkdir(parents=True, exist_ok=True)
    path = images / name
    image.save(path)
    return path, lines


@pytest.fixture
def page(tmp_path, ls):
    return save_page(tmp_path, ls)


@pytest.fixture
def other_page(tmp_path, ls):
    """The same lines at another slant: other pixels (a shift alone would give the same
    crops), so annotations reading them otherwise do not conflict with ``page``'s."""
    return save_page(tmp_path, ls, "page2.png", slant=-3.0)


def data_for(path: Path, root: Path) -> dict:
    rel = path.relative_to(root).as_posix()
    return {"ocr": f"/data/local-files/?d={rel}", "image_path": rel, "sha256": file_sha256(path)}


def full_annotation(ls, lines, aid=1, order=(2, 0, 1), **kwargs):
    """Every line boxed and transcribed, regions listed out of reading order."""
    results = []
    for i in order:
        results += ls.region(f"r{i}", lines[i].box, lines[i].text, SIZE)
    return ls.annotation(aid, results, **kwargs)


def run(tmp_path, ls, tasks, **options):
    export = ls.write_export(tmp_path / "export.json", tasks)
    opts = ImportOptions(images_root=tmp_path / "images", **options)
    return import_export(export, tmp_path / "dataset", opts)


def test_lines_and_paragraph_from_a_full_annotation(tmp_path, ls, page):
    path, lines = page
    root = tmp_path / "images"
    result = run(tmp_path, ls, [ls.task(7, data_for(path, root), [full_annotation(ls, lines)])])

    manifest = Manifest.load(tmp_path / "dataset")
    assert manifest.version == result.manifest.version
    line_samples = [s for s in manifest if s.kind == "line"]
    paragraphs = [s for s in manifest if s.kind == "paragraph"]
    # Reading order comes from the boxes, not from the order regions were drawn in.
    assert [s.text for s in line_samples] == TEXTS
    assert [s.text for s in paragraphs] == ["\n".join(TEXTS)]
    assert {s.source for s in manifest} == {"labelstudio"}
    assert {s.group for s in manifest} == {"labelstudio:1:7"}
    assert len({s.split for s in manifest}) == 1, "a page's lines and paragraph share a split"
    for sample, drawn in zip(line_samples, lines, strict=True):
        assert sample.meta["task_id"] == 7 and sample.meta["annotation_id"] == 1
        crop = manifest.path_of(sample)
        assert file_sha256(crop) == sample.sha256
        ink = ls.ink_of(Image.open(crop))
        overlap = (ink & drawn.upright[: ink.shape[0], : ink.shape[1]]).sum()
        assert overlap / drawn.upright.sum() > 0.8, sample.text
    assert result.tasks_used == 1 and not result.reasons
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    assert report["dataset_version"] == manifest.version and report["skipped"] == []


def test_paragraph_holds_only_boxed_ink(tmp_path, ls):
    # A printed prompt left of the handwriting, which annotators are told not to box.
    image, lines = ls.draw_page(
        [("NAME:", 40, 100, 0), ("Ann Smith", 220, 100, 0), ("lives here", 220, 200, 0)], SIZE
    )
    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "form.png"
    image.save(path)
    results = ls.region("a", lines[1].box, "Ann Smith", SIZE) + ls.region(
        "b", lines[2].box, "lives here", SIZE
    )
    task = ls.task(1, data_for(path, tmp_path / "images"), [ls.annotation(1, results)])

    masked = run(tmp_path, ls, [task])
    paragraph = next(s for s in masked.manifest if s.kind == "paragraph")
    ink = ls.ink_of(Image.open(masked.manifest.path_of(paragraph)))
    prompt_ink = lines[0].mask.sum()
    boxed_ink = lines[1].mask.sum() + lines[2].mask.sum()
    assert paragraph.text == "Ann Smith\nlives here"
    assert abs(int(ink.sum()) - boxed_ink) < 0.2 * boxed_ink, "no printed prompt in the image"

    (tmp_path / "dataset" / "manifest.jsonl").unlink()
    unmasked = run(tmp_path, ls, [task], mask_paragraphs=False)
    paragraph = next(s for s in unmasked.manifest if s.kind == "paragraph")
    ink = ls.ink_of(Image.open(unmasked.manifest.path_of(paragraph)))
    assert prompt_ink > 0 and ink.sum() >= boxed_ink  # the crop is the same box, unmasked


def test_annotator_policy_ground_truth_then_latest_and_cancelled_ignored(
    tmp_path, ls, page, other_page
):
    path, lines = page
    data = data_for(path, tmp_path / "images")

    def with_first_text(aid, first, lines=lines, **kwargs):
        results = ls.region("r0", lines[0].box, first, SIZE)
        for i in (1, 2):
            results += ls.region(f"r{i}", lines[i].box, lines[i].text, SIZE)
        return ls.annotation(aid, results, **kwargs)

    tasks = [
        ls.task(
            1,
            data,
            [
                with_first_text(10, "older", updated_at="2026-03-01T10:00:00Z"),
                with_first_text(11, "newer", updated_at="2026-03-02T10:00:00Z"),
                with_first_text(
                    12, "skipped", updated_at="2026-03-09T10:00:00Z", was_cancelled=True
                ),
            ],
        ),
        ls.task(
            2,
            data_for(other_page[0], tmp_path / "images"),
            [
                with_first_text(
                    20,
                    "reviewed",
                    other_page[1],
                    updated_at="2026-03-01T10:00:00Z",
                    ground_truth=True,
                ),
                with_first_text(21, "latest", other_page[1], updated_at="2026-03-05T10:00:00Z"),
            ],
        ),
    ]
    result = run(tmp_path, ls, tasks)
    firsts = {s.meta["task_id"]: s.text for s in result.manifest if s.meta.get("line") == 1}
    assert firsts == {1: "newer", 2: "reviewed"}


def test_every_skip_reason_is_reported(tmp_path, ls, page):
    path, lines = page
    root = tmp_path / "images"
    data = data_for(path, root)
    region = ls.region
    box0, box1, box2 = (line.box for line in lines)
    tasks = [
        ls.task(1, data, []),  # never annotated
        ls.task(2, data, [], predictions=[{"model_version": "m", "result": []}]),
        ls.task(3, data, [ls.annotation(1, [], was_cancelled=True)]),  # skipped by annotator
        ls.task(4, data, [ls.annotation(1, [])]),  # submitted empty
        ls.task(5, {"ocr": "/data/local-files/?d=scans/missing.png"}, [full_annotation(ls, lines)]),
        ls.task(6, {**data, "sha256": "0" * 64}, [full_annotation(ls, lines)]),
        ls.task(
            7,
            data,
            [
                ls.annotation(
                    1,
                    region("a", box0, None, SIZE)  # box, no text
                    + region("b", None, "floating text", SIZE)  # text, no box
                    + region("c", box1, "Kew £5 naïve", SIZE)  # ï not in the vocabulary
                    + region("d", box2, "the ### came", SIZE)  # illegible
                    + region("e", Box(5, 5, 1, 0.5), "dot", SIZE)  # too small to be a line
                    + region("f", Box(700, 500, 100, 40), "Stamp", SIZE, label="Printed"),
                )
            ],
        ),
        ls.task(8, {"text": "no image"}, [full_annotation(ls, lines)]),
    ]
    result = run(tmp_path, ls, tasks)
    assert dict(result.reasons) == {
        "no_annotations": 2,
        "all_cancelled": 1,
        "no_regions": 1,
        "image_not_found": 1,
        "image_changed": 1,
        "box_without_text": 1,
        "text_without_box": 1,
        "unknown_characters": 1,
        "illegible": 1,
        "tiny_box": 1,
        "not_a_line": 1,
        "incomplete_paragraph": 1,
        "bad_task": 1,
    }
    assert len(result.manifest) == 0 and result.tasks_used == 0
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    where = {s["where"]: s["reason"] for s in report["skipped"]}
    assert "only model predictions" in where["task 2"]
    assert "'ï'" in where["task 7 region c"]
    assert "missing.png" in where["task 5"]


def test_keep_flags_and_escaped_hash(tmp_path, ls, page):
    path, lines = page
    results = (
        ls.region("a", lines[0].box, "Item \\#5 naïve", SIZE)
        + ls.region("b", lines[1].box, "the ### came", SIZE)
        + ls.region("c", lines[2].box, "\u201cquoted\u201d  text\u2026", SIZE)
    )
    task = ls.task(1, data_for(path, tmp_path / "images"), [ls.annotation(1, results)])
    strict = run(tmp_path, ls, [task])
    assert [s.text for s in strict.manifest] == ['"quoted" text...']

    (tmp_path / "dataset" / "manifest.jsonl").unlink()
    loose = run(tmp_path, ls, [task], keep_illegible=True, keep_unknown=True)
    texts = [s.text for s in loose.manifest if s.kind == "line"]
    assert texts == ["Item #5 naïve", "the ### came", '"quoted" text...']


def test_min_agreement(tmp_path, ls, page, other_page):
    path, lines = page
    data = data_for(path, tmp_path / "images")

    def reading(aid, first, lines=lines, **kwargs):
        results = ls.region("r0", lines[0].box, first, SIZE)
        results += ls.region("r1", lines[1].box, lines[1].text, SIZE)
        return ls.annotation(aid, results, **kwargs)

    second = {"updated_at": "2026-03-02T00:00Z", "completed_by": 2}  # another annotator's
    agree = [reading(1, "Kew, 3rd May"), reading(2, "Kew, 3rd Mey", **second)]
    disagree = [reading(3, "Kew, 3rd May"), reading(4, "zzzz zzzz zz", **second)]
    # Kept with task 1, which reads the first line otherwise: on another page, no conflict.
    reviewed = [
        reading(5, "Kew, 3rd May", other_page[1], ground_truth=True),
        reading(6, "zzzz zzzz zz", other_page[1], completed_by=2),
    ]
    tasks = [
        ls.task(1, data, agree),
        ls.task(2, data, disagree),
        ls.task(3, data, [reading(7, "Kew, 3rd May")]),
        ls.task(4, data_for(other_page[0], tmp_path / "images"), reviewed),
    ]
    result = run(tmp_path, ls, tasks, min_agreement=0.9)
    assert dict(result.reasons) == {"low_agreement": 1, "no_second_annotation": 1}
    kept = {s.meta["task_id"] for s in result.manifest}
    assert kept == {1, 4}
    scores = {s.meta["task_id"]: s.meta["agreement"] for s in result.manifest}
    assert 0.9 < scores[1] < 1.0


def test_a_second_submission_by_the_same_annotator_is_no_agreement(tmp_path, ls, page):
    """One person submitting a page twice agrees with themself (1.0), which says nothing
    about whether another reader sees the same text."""
    path, lines = page
    twice = [
        full_annotation(ls, lines, aid=1, updated_at="2026-03-01T10:00:00Z"),
        full_annotation(ls, lines, aid=2, updated_at="2026-03-02T10:00:00Z"),
    ]
    tasks = [ls.task(1, data_for(path, tmp_path / "images"), twice)]
    strict = run(tmp_path, ls, tasks, min_agreement=0.95)
    assert dict(strict.reasons) == {"no_second_annotation": 1}
    assert len(strict.manifest) == 0
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    assert "1 more by the same annotator, 1" in report["skipped"][0]["reason"]

    kept = run(tmp_path, ls, tasks)  # without --min-agreement: kept, with no agreement
    assert len(kept.manifest) == 4
    assert {s.meta["agreement"] for s in kept.manifest} == {None}


def test_image_resolution_upload_and_http_and_size_checks(tmp_path, ls, page):
    path, lines = page
    root = tmp_path / "images"
    upload = {"ocr": "/data/upload/3/0a1b2c3d-page1.png"}  # uploaded through the UI
    web = {"ocr": "https://example.org/static/scans/page1.png"}
    # Annotated on a 2x downscaled copy: percentages still fit the full-size file.
    half = ls.annotation(
        1, [r for i in range(3) for r in ls.region(f"r{i}", lines[i].box, TEXTS[i], SIZE)]
    )
    for result in half["result"]:
        result["original_width"], result["original_height"] = SIZE[0] // 2, SIZE[1] // 2
    # A sideways copy (EXIF mix-up): width and height swapped.
    sideways = json.loads(json.dumps(half))
    for result in sideways["result"]:
        result["original_width"], result["original_height"] = SIZE[1], SIZE[0]
    (root / "page1.png").write_bytes(path.read_bytes())  # uploads resolve by file name
    tasks = [ls.task(1, upload, [half]), ls.task(2, web, [half]), ls.task(3, web, [sideways])]
    result = run(tmp_path, ls, tasks)
    # Tasks 1 and 2 found the same file: their samples are the same pixels and texts, once.
    assert dict(result.reasons) == {"size_mismatch": 1, "duplicate": 4}
    assert {s.meta["task_id"] for s in result.manifest} == {1}
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    assert "EXIF" in report["skipped"][0]["reason"]
    duplicates = [s["where"] for s in report["skipped"] if s["reason"].startswith("duplicate")]
    assert duplicates == ["task 2 region r0", "task 2 region r1", "task 2 region r2", "task 2"]


def test_bad_exports_and_existing_dataset(tmp_path, ls, page):
    opts = ImportOptions(images_root=tmp_path / "images")
    out = tmp_path / "dataset"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LabelStudioExportError, match="not JSON"):
        import_export(bad, out, opts)
    bad.write_text("Kew, 3rd May\n")  # a comma, but no header of column names: not a CSV
    with pytest.raises(LabelStudioExportError, match="bad.json is not JSON: Expecting value"):
        import_export(bad, out, opts)
    bad.write_text(json.dumps([{"ocr": "x.png", "transcription": ["a"], "id": 3}]))
    with pytest.raises(LabelStudioExportError, match="JSON-MIN"):
        import_export(bad, out, opts)
    with pytest.raises(LabelStudioExportError, match="no export"):
        import_export(tmp_path / "absent.json", out, opts)

    path, lines = page
    export = ls.write_export(
        tmp_path / "e.json",
        [ls.task(1, data_for(path, tmp_path / "images"), [full_annotation(ls, lines)])],
    )
    first = import_export(export, out, opts)
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_export(export, out, opts)
    again = import_export(export, out, opts, overwrite=True)
    assert again.manifest.version == first.manifest.version
    assert len(list((out / "images").iterdir())) == len(again.manifest)
    # an --overwrite whose export gives nothing kept the old dataset, which it deleted first
    empty = ls.write_export(
        tmp_path / "empty.json", [ls.task(2, data_for(path, tmp_path / "images"), [])]
    )
    nothing = import_export(empty, out, opts, overwrite=True)
    assert len(nothing.manifest) == 0
    assert Manifest.load(out).version == first.manifest.version
    assert len(list((out / "images").iterdir())) == len(first.manifest)


LS_CSV = (
    "annotation_id,annotator,created_at,id,label,lead_time,ocr,transcription,updated_at\n"
    '1,1,2026-03-01,7,"[{""x"": 9.1}]",42.5,/data/local-files/?d=p1.png,Kew,2026-03-01\n'
)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("export.csv", LS_CSV, "export.csv is a CSV export; export the project as JSON"),
        ("export", LS_CSV, "export is a CSV export; export the project as JSON"),
        ("export.txt", LS_CSV.replace(",", "\t"), "export.txt is a TSV export"),
    ],
)
def test_table_exports_are_named_as_such(tmp_path, name, text, message):
    export = tmp_path / name
    export.write_text(text)
    opts = ImportOptions(images_root=tmp_path)
    with pytest.raises(LabelStudioExportError, match=message):
        import_export(export, tmp_path / "dataset", opts)


def test_an_export_that_cannot_be_read_is_one_error(tmp_path):
    """A folder or an unreadable path used to escape as IsADirectoryError or OSError."""
    opts = ImportOptions(images_root=tmp_path)
    with pytest.raises(LabelStudioExportError, match="is a folder; give the export's JSON file"):
        import_export(tmp_path, tmp_path / "dataset", opts)
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(LabelStudioExportError, match="cannot read .*loop.json: Too many levels"):
        import_export(loop, tmp_path / "dataset", opts)


def test_reading_order_on_a_rotated_page(tmp_path, ls):
    # The whole page photographed at -20 degrees: lines go up to the right, and a later
    # line's left end is higher than an earlier line's right end.
    theta = np.radians(-20)
    specs = []
    for i, text in enumerate(["first line here", "second line here", "third one"]):
        x = 150 + 60 * i * np.sin(-theta)
        y = 350 + 60 * i * np.cos(theta)
        specs.append((text, float(x), float(y), -20.0))
    image, lines = ls.draw_page(specs, SIZE)
    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "tilted.png"
    image.save(path)
    results = [r for i in (2, 0, 1) for r in ls.region(f"r{i}", lines[i].box, lines[i].text, SIZE)]
    task = ls.task(1, data_for(path, tmp_path / "images"), [ls.annotation(1, results)])
    result = run(tmp_path, ls, [task])
    paragraph = next(s for s in result.manifest if s.kind == "paragraph")
    assert paragraph.text == "first line here\nsecond line here\nthird one"
    assert paragraph.meta["box"][4] == pytest.approx(-20.0)
    crop = Image.open(result.manifest.path_of(paragraph))
    assert crop.width > crop.height, "the tilted page comes out level"


def test_a_box_mostly_off_the_image_is_left_out_of_lines_and_paragraph(
    tmp_path, ls, page, other_page
):
    path, lines = page
    # x = 150 %, as in a hand-edited export: the crop would be blank paper labelled "Stamp".
    off = ls.region("off", Box(0, 300, 100, 40), "Stamp", SIZE)
    for result in off:
        result["value"].update(x=150, width=50)
    results = ls.region("r0", lines[0].box, TEXTS[0], SIZE) + off
    results += ls.region("r1", lines[1].box, TEXTS[1], SIZE)
    # A box reaching a little past the right edge is kept: its overhang is painted paper.
    last = other_page[1][2].box
    past_edge = Box(last.x, last.y, (SIZE[0] - last.x) / 0.92, last.height, last.rotation)
    tasks = [
        ls.task(1, data_for(path, tmp_path / "images"), [ls.annotation(1, results)]),
        ls.task(
            2,
            data_for(other_page[0], tmp_path / "images"),
            [ls.annotation(2, ls.region("r2", past_edge, TEXTS[2], SIZE))],
        ),
    ]
    result = run(tmp_path, ls, tasks)
    assert dict(result.reasons) == {"outside_image": 1, "incomplete_paragraph": 1}
    texts = {(s.meta["task_id"], s.kind, s.text) for s in result.manifest}
    assert texts == {
        (1, "line", TEXTS[0]),
        (1, "line", TEXTS[1]),
        (2, "line", TEXTS[2]),
        (2, "paragraph", TEXTS[2]),
    }
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    where = {s["where"]: s["reason"] for s in report["skipped"]}
    assert where["task 1 region off"].startswith("outside_image")
    assert "0% of the box on the image" in where["task 1 region off"]


def test_oddly_typed_exports_skip_the_task_or_region_and_go_on(tmp_path, ls, page):
    """Valid JSON with types no Label Studio writes used to raise (AttributeError,
    ValueError, OverflowError) or, for a box 10^6 % wide, run for minutes."""
    path, lines = page
    data = data_for(path, tmp_path / "images")

    def first_line_with(**value):
        results = ls.region("r0", lines[0].box, TEXTS[0], SIZE)
        for result in results:
            result["value"].update(value)
        return [ls.annotation(1, results)]

    stray = ls.region("junk", lines[2].box, "junk", SIZE)
    stray[0]["value"] = "x=10,y=20"  # a string where the value object belongs
    tasks = [
        ls.task(1, data, [full_annotation(ls, lines, order=(0, 1))]),
        ls.task(2, "scans/page1.png", [full_annotation(ls, lines)]),  # data as a string
        ls.task(3, data, first_line_with(x=float("nan"))),
        ls.task(4, data, first_line_with(width=float("inf"))),
        ls.task(5, data, first_line_with(width=1e6)),
        ls.task(6, data, [{**ls.annotation(1, []), "result": "r0"}]),
        ls.task(7, {"ocr": "https://[::1/page1.png"}, [full_annotation(ls, lines)]),  # no URL
    ]
    tasks[0]["annotations"][0]["result"] += stray
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))  # NaN and Infinity, as Python's json writes them
    assert "NaN" in export.read_text() and "Infinity" in export.read_text()
    opts = ImportOptions(images_root=tmp_path / "images")
    result = import_export(export, tmp_path / "dataset", opts)

    assert dict(result.reasons) == {
        "bad_region": 4,
        "bad_task": 3,
        "no_regions": 3,
        "incomplete_paragraph": 1,
    }
    assert [s.text for s in result.manifest] == TEXTS[:2]  # task 1's two good lines
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    where = {s["where"]: s["reason"] for s in report["skipped"]}
    assert "value is str, not an object" in where["task 1 region junk"]
    assert "data is str, not an object" in where["task 2"]
    assert "x is nan" in where["task 3 region r0"]
    assert "width is inf" in where["task 4 region r0"]
    assert "width is 1000000.0" in where["task 5 region r0"]
    assert "annotation 1 result is str, not a list" in where["task 6"]
    assert "Invalid IPv6 URL" in where["task 7"]


def test_regions_drawn_as_other_shapes_are_reported_and_cost_the_paragraph(
    tmp_path, ls, page, other_page
):
    """A line drawn as a polygon (or brush stroke, ellipse...) is refused by design; it used
    to vanish without a word, and its page's paragraph came out a line short."""
    path, lines = page
    common = {"to_name": "image", "original_width": SIZE[0], "original_height": SIZE[1]}
    points = [[7, 60], [70, 60], [70, 66], [7, 66]]
    polygon = [
        {**common, "id": "poly", "type": "polygonlabels", "from_name": "label",
         "value": {"points": points, "polygonlabels": ["Line"]}},
        {**common, "id": "poly", "type": "textarea", "from_name": "transcription",
         "value": {"points": points, "text": [TEXTS[2]]}},
    ]  # fmt: skip
    ellipse = {
        **common, "id": "oval", "type": "ellipse", "from_name": "shape",
        "value": {"x": 50, "y": 50, "radiusX": 10, "radiusY": 3, "rotation": 0},
    }  # fmt: skip
    # A stamp outlined as a polygon with another label is left out on purpose, as a box is.
    stamp = {
        **common, "id": "stamp", "type": "polygonlabels", "from_name": "label",
        "value": {"points": points, "polygonlabels": ["Stamp"]},
    }  # fmt: skip
    shapes = full_annotation(ls, lines, order=(0, 1))
    shapes["result"] += [*polygon, ellipse]
    labelled = full_annotation(ls, other_page[1])
    labelled["result"].append(stamp)
    tasks = [
        ls.task(1, data_for(path, tmp_path / "images"), [shapes]),
        ls.task(2, data_for(other_page[0], tmp_path / "images"), [labelled]),
    ]
    result = run(tmp_path, ls, tasks)
    assert dict(result.reasons) == {"not_a_box": 2, "incomplete_paragraph": 1, "not_a_line": 1}
    kept = sorted((s.meta["task_id"], s.kind, s.text) for s in result.manifest)
    assert kept == [
        (1, "line", TEXTS[0]),
        (1, "line", TEXTS[1]),
        *[(2, "line", text) for text in sorted(TEXTS)],
        (2, "paragraph", "\n".join(TEXTS)),
    ]
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    where = {s["where"]: s["reason"] for s in report["skipped"]}
    assert "drawn as polygonlabels, text 'the seeds came'" in where["task 1 region poly"]
    assert "drawn as ellipse" in where["task 1 region oval"]
    assert where["task 1"].startswith("incomplete_paragraph")


def test_conflicting_labels_of_the_same_pixels_are_left_out_and_repeats_kept_once(
    tmp_path, ls, page
):
    path, lines = page
    data = data_for(path, tmp_path / "images")
    # Task 2 shows the same image with the same boxes (pushed twice, or one photo exported
    # twice from monitoring) but reads the first line otherwise.
    second = full_annotation(ls, lines, aid=2)
    for result in second["result"]:
        if result["id"] == "r0" and result["type"] == "textarea":
            result["value"]["text"] = ["Label B"]
    # Task 3 boxes the second line more loosely: other pixels, so its own sample.
    loose = lines[1].box
    loose = Box(loose.x - 6, loose.y - 6, loose.width + 12, loose.height + 12, loose.rotation)
    tasks = [
        ls.task(1, data, [full_annotation(ls, lines)]),
        ls.task(2, data, [second]),
        ls.task(3, data, [ls.annotation(3, ls.region("r1", loose, TEXTS[1], SIZE))]),
    ]
    result = run(tmp_path, ls, tasks)

    assert dict(result.reasons) == {
        "conflicting_label": 2,  # line 1 of tasks 1 and 2
        "incomplete_paragraph": 2,  # their pages, which hold that line
        "duplicate": 2,  # lines 2 and 3 of task 2, the same as task 1's
    }
    kept = sorted((s.meta["task_id"], s.kind, s.text) for s in result.manifest)
    assert kept == [
        (1, "line", TEXTS[1]),
        (1, "line", TEXTS[2]),
        (3, "line", TEXTS[1]),
        (3, "paragraph", TEXTS[1]),
    ]
    assert "Label B" not in {s.text for s in result.manifest}
    assert len({s.sha256 for s in result.manifest}) == len(result.manifest)
    # The same image in several tasks lands in one group, so it cannot straddle two splits.
    assert len({s.group for s in result.manifest}) == 1
    assert result.tasks_used == 2
    report = json.loads((tmp_path / "dataset" / "import-report.json").read_text())
    where = {s["where"]: s["reason"] for s in report["skipped"]}
    assert "task 2 region r0 says 'Label B'" in where["task 1 region r0"]
    assert "task 1 region r0 says 'Kew, 3rd May'" in where["task 2 region r0"]
    assert "kept from task 1 region r1" in where["task 2 region r1"]
    assert not list((tmp_path / "dataset").glob(".scratch-*")), "the scratch folder is removed"
