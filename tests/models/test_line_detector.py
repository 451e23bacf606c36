"""The learned line detector: the page composer's truth, the network, its post-processing, a
few training steps through the real Lightning path, and the shipped weights on pages of
writers they never saw.

Tiny data is built here: four datasets in the shared layout (``labels.tsv``, ``lines/``) whose
"handwriting" is rows of dark word-blobs with ascenders, enough for the composer and the
training loop to run for real in a second.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from quill.bench.detection import detect_score
from quill.bench.page_sets import load_pages
from quill.cli import app
from quill.data.manifest import assign_splits
from quill.data.synth.pages import (
    DATASETS,
    EVALUATION_PAGES,
    compose_page_sample,
    line_files,
    shared_datasets,
)
from quill.models.line_detector import (
    LineDetector,
    LineDetectorConfig,
    line_boxes,
    load_detector,
)
from quill.models.segment import DEFAULT_DETECTOR, SegmentConfig, segment_lines
from quill.training.config import ConfigError
from quill.training.line_detector import resolve, train_line_detector

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / DEFAULT_DETECTOR


def _line_image(rng: np.random.Generator, words: int) -> Image.Image:
    """A 48 px tall grey crop: ``words`` words of 2-6 looped letters on an x-height band,
    some with an ascender, on white."""
    image = Image.new("L", (40 + 80 * words, 48), 255)
    draw = ImageDraw.Draw(image)
    x = 10
    for _ in range(words):
        for _ in range(int(rng.integers(2, 7))):
            draw.ellipse((x, 20, x + 9, 32), outline=int(rng.integers(20, 60)), width=2)
            if rng.random() < 0.3:
                draw.line((x + 8, 8, x + 8, 26), fill=40, width=2)
            x += 11
        x += int(rng.integers(12, 20))
    return image


@pytest.fixture(scope="module")
def tiny_shared(tmp_path_factory) -> Path:
    """Four datasets of 12 writers x 8 lines each, in the shared layout (every split has
    writers: 7 train, 3 val, 2 test)."""
    root = tmp_path_factory.mktemp("shared")
    rng = np.random.default_rng(0)
    wanted = {"train": 7, "val": 3, "test": 2}
    writers = []
    for number in range(1000):  # the first writer names the import's hash puts in each split
        name = f"w{number}"
        split = assign_splits([name])[name]
        if wanted[split]:
            wanted[split] -= 1
            writers.append(name)
    for dataset in DATASETS:
        (root / dataset / "lines").mkdir(parents=True)
        rows = ["file\tpage\ttext"]
        for writer in writers:
            for number in range(8):
                name = f"lines/{writer}_{number}.png"
                _line_image(rng, int(rng.integers(2, 8))).save(root / dataset / name)
                rows.append(f"{name}\t{writer}__page{number // 4}\tline {number} of {writer}")
        (root / dataset / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------ the composer


def test_writers_are_split_like_import_and_the_evaluation_pages_left_out(tiny_shared):
    splits = {split: line_files("poilus", split, tiny_shared) for split in ("train", "val", "test")}
    files = [path for writers in splits.values() for writer in writers for path in writer]
    assert len(files) == len(set(files)) == 12 * 8  # every writer in exactly one split
    assert all(len(writer) == 8 for writers in splits.values() for writer in writers)
    assert all(splits.values())
    hooker = line_files("hooker-letters", evaluation=False)
    if hooker:  # the real shared set: none of the bench's four pages
        names = {path.name for writer in hooker for path in writer}
        assert not any(name.startswith(page) for name in names for page in EVALUATION_PAGES)


@pytest.mark.parametrize("seed", range(6))
def test_composed_lines_lie_in_their_true_boxes(tiny_shared, seed):
    page = compose_page_sample(seed, None, tiny_shared)
    width, height = page.image.size
    assert page.cores.shape == (height, width)
    assert len(page.boxes) == len(page.texts) >= 4
    inside = np.zeros(page.cores.shape, bool)
    for x0, y0, x1, y1 in page.boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert page.cores[y0:y1, x0:x1].any()  # every line has its core band
        inside[y0:y1, x0:x1] = True
    # and cores lie in lines (a tilted band's corners may stick out of its ink box a little)
    assert page.cores[inside].sum() >= 0.9 * page.cores.sum()
    grey = np.asarray(page.image.convert("L"), np.float32)
    assert grey[inside].min() < np.median(grey) - 60  # the boxes hold the ink


def test_scan_marks_add_ink_but_no_line(tiny_shared):
    """Show-through, a scanner's edge, a fold and dust darken the page and leave its lines,
    texts and cores as they were: they are what the detector must learn to pass over."""
    marked = 0
    for seed in range(8):
        plain = compose_page_sample(seed, None, tiny_shared)
        scanned = compose_page_sample(seed, None, tiny_shared, scan_marks=True)
        assert scanned.boxes == plain.boxes and scanned.texts == plain.texts
        assert np.array_equal(scanned.cores, plain.cores)
        before, after = np.asarray(plain.image, float), np.asarray(scanned.image, float)
        assert (after <= before + 1).all()  # the same paper: marks only darken it
        marked += bool((after < before - 20).sum() > 50)
    assert marked >= 4


def test_whole_pages_know_every_line_text(tiny_shared):
    page = compose_page_sample(3, None, tiny_shared, whole=True)
    assert all(text and text.startswith("line ") for text in page.texts)
    assert 0 < page.main_lines <= len(page.boxes)


def test_data_pages_writes_a_page_set_the_bench_reads(tiny_shared, tmp_path):
    from typer.testing import CliRunner

    from quill.cli import app

    args = ["data", "pages", "--out", str(tmp_path), "-n", "2", "--split", "test"]
    args += ["--shared", str(tiny_shared), "--dataset", "poilus", "--seed", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pages = load_pages(f"composed={tmp_path}")
    expected = [
        compose_page_sample(seed, "test", tiny_shared, True, ("poilus",)) for seed in (5, 6)
    ]
    assert [len(page.text_lines) for page in pages.pages] == [len(e.boxes) for e in expected]
    assert pages.pages[0].text == "\n".join(text or "" for text in expected[0].texts)
    assert [line.box for line in pages.pages[1].text_lines] == expected[1].boxes
    wrong = CliRunner().invoke(app, [*args, "--dataset", "iam"])
    assert wrong.exit_code == 2 and "one of copiste" in wrong.output


# ------------------------------------------------------------------ the network


def test_network_output_is_half_the_input_and_small():
    net = LineDetector(LineDetectorConfig(channels=(16, 32, 64)))
    logits = net(torch.zeros(2, 1, 64, 96))
    assert logits.shape == (2, 1, 32, 48)
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 500_000


def test_post_processing_of_a_hand_made_map():
    """Two lines (the first with a gap between words), a note far to the right of the first
    line, a speck; ink with ascenders above the cores and a stroke far from any line."""
    config = LineDetectorConfig()
    probabilities = np.zeros((40, 100), np.float32)
    probabilities[10:13, 5:30] = probabilities[10:13, 33:60] = 0.9  # line 1, a word gap
    probabilities[10:13, 85:95] = 0.8  # a note beside it: not joined
    probabilities[25:28, 5:50] = 0.95  # line 2
    probabilities[35, 70] = 0.9  # a speck: too small for a line
    probabilities[30:33, 60:62] = 0.3  # below the threshold
    ink = np.kron(probabilities > 0.5, np.ones((2, 2))).astype(np.float32)
    ink[14:20, 12:22] = 1.0  # ascenders of line 1 (input pixels: twice the map's)
    ink[2:4, 150:160] = 1.0  # far from every core: nobody's
    boxes = line_boxes(probabilities, ink, config)
    assert boxes == [(10, 14, 120, 26), (170, 20, 190, 26), (10, 50, 100, 56)]


# ------------------------------------------------------------------ training


def test_a_few_training_steps_through_lightning(tiny_shared, tmp_path):
    config = resolve(
        Path("configs/line_detector.yaml"),
        [
            "model.size=128",
            "data.crop=64",
            "data.batch_size=2",
            "data.val_pages=2",
            "data.pool=4",
            f"data.root={tiny_shared}",
            "trainer.max_steps=3",
            "trainer.val_every_n_steps=2",
            "trainer.log_every_n_steps=1",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"out={tmp_path / 'detector'}",
        ],
    )
    weights = train_line_detector(config)
    net = load_detector(weights)
    assert net.config.size == 128 and not net.training
    assert (tmp_path / "detector" / "config.yaml").is_file()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        keys = {key for (key,) in db.execute("select distinct key from metrics")}
        runs = db.execute("select name, status from runs").fetchall()
    assert {"train/loss", "val/loss", "val/core_iou"} <= keys
    [(name, status)] = runs
    assert status == "FINISHED" and name.startswith("line-detector-")  # not MLflow's seeded name


def test_a_run_that_fails_is_recorded_as_failed_not_left_running(tiny_shared, tmp_path):
    store = tmp_path / "mlflow.db"
    overrides = [f"data.root={tiny_shared}", f"tracking.tracking_uri=sqlite:///{store}"]
    config = resolve(None, [*overrides, "model.channels=[1]", f"out={tmp_path / 'detector'}"])
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the network's own error
        train_line_detector(config)
    with sqlite3.connect(store) as db:
        assert db.execute("select status from runs").fetchall() == [("FAILED",)]


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    store = tmp_path / "mlflow.db"
    # the store named, and an empty working folder: had training begun, it would write
    # there, not into the repository
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    command = ["detector", "train", "--config", str(REPO_ROOT / "configs" / "line_detector.yaml")]
    command += [f"tracking.tracking_uri=sqlite:///{store}", f"out={blocker / 'detector'}"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "out " in result.output and "not a folder" in result.output
    assert not store.exists() and list(elsewhere.iterdir()) == []


def test_a_typo_in_the_config_is_an_error(tmp_path):
    (tmp_path / "typo.yaml").write_text("trainer:\n  max_step: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_steps"):
        resolve(tmp_path / "typo.yaml", [])
    with pytest.raises(ConfigError, match="max_steps"):
        resolve(None, ["trainer.max_step=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be a positive whole number, got 0"),
        ("optim.lr=-1", "optim.lr must be a positive finite number, got -1"),
        ("data.crop=abc", "data.crop must be a whole number, got 'abc'"),
        ("model.size=-5", "model.size must be a positive whole number, got -5"),
    ],
)
def test_a_value_out_of_its_range_is_an_error_before_any_page_is_composed(override, message):
    """torch's own errors came after the data was composed: "Invalid learning rate: -1", or a
    TypeError deep in the cropping for a crop size that is no number."""
    with pytest.raises(ConfigError) as refused:
        resolve(None, [override])
    assert str(refused.value) == message
    assert resolve(None, ["trainer.max_steps=-1"])["trainer"]["max_steps"] == -1  # no limit


# ------------------------------------------------------------------ the shipped weights


needs_shipped = pytest.mark.skipif(
    not SHIPPED.is_file() or not line_files("poilus", "test"),
    reason=f"no shipped detector at {SHIPPED} or no shared line crops at {shared_datasets()}",
)


@needs_shipped
def test_shipped_detector_finds_lines_of_unseen_writers():
    """Four pages of test-split writers (copiste, poilus): none trained on. Measured on these
    pages: recall and precision 100% (69 of 69 lines, no extra box); the floor leaves room for
    other torch builds."""
    total = None
    for seed in range(900, 904):
        page = compose_page_sample(seed, "test", whole=True, datasets=("copiste", "poilus"))
        found = segment_lines(page.image, SegmentConfig(method="learned", detector=str(SHIPPED)))
        score = detect_score([segment.box for segment in found], page.boxes)
        total = score if total is None else total + score
    assert total is not None
    assert total.recall >= FLOOR and total.precision >= FLOOR, total


@needs_shipped
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_learned_lines_of_a_turned_page_are_read_upright(degrees):
    """The quarter turn is the tracer's; the half turn reads the learned lines' ink (more
    above their cores than below, ragged right ends). Turned back, the page gives the lines
    the upright page gives (the shipped detector finds 16 of its 17)."""
    page = compose_page_sample(901, "test", whole=True, datasets=("copiste", "poilus"))
    config = SegmentConfig(method="learned", detector=str(SHIPPED))
    upright = segment_lines(page.image, config)
    found = segment_lines(page.image.rotate(degrees, expand=True), config)
    assert found.rotation == 360 - degrees  # turning it back
    assert len(found) == len(upright) >= len(page.boxes) - 1


@needs_shipped
def test_quill_predict_cuts_pages_with_the_segmenter_asked_for(smoke_model, tmp_path):
    """``quill predict --segmenter learned`` reads a page by the detector's lines (boxes on
    the page, in reading order); an unknown segmenter is a usage error."""
    page = compose_page_sample(902, "test", whole=True, datasets=("copiste", "poilus"))
    page.image.save(tmp_path / "page.png")
    command = ["predict", str(tmp_path / "page.png"), "--json", "-m", str(smoke_model)]
    result = CliRunner().invoke(app, [*command, "--segmenter", "learned"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    found = detect_score([line["box"] for line in record["lines"]], page.boxes)
    assert found.recall >= FLOOR and found.precision >= FLOOR, found
    tops = [line["box"][1] for line in record["lines"]]
    assert tops == sorted(tops)
    wrong = CliRunner().invoke(app, [*command, "--segmenter", "nearest"])
    assert wrong.exit_code == 2 and "trace, learned" in wrong.output


#: Recall and precision floor for the shipped weights on the four pages above.
FLOOR = 0.9


def test_missing_detector_weights_fail_the_load_clearly(smoke_model, tmp_path, monkeypatch):
    """From a folder without the shipped weights (and none in the checkout), asking for the
    learned segmenter is a clear error at load, not a traceback on the first page."""
    import quill.models.segment as segment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(segment, "CHECKOUT", tmp_path / "elsewhere")
    render = Image.new("RGB", (400, 200), "white")
    render.save(tmp_path / "page.png")
    command = ["predict", str(tmp_path / "page.png"), "-m", str(smoke_model)]
    result = CliRunner().invoke(app, [*command, "--segmenter", "learned"])
    assert result.exit_code == 2  # a model (here its detector) that cannot be loaded
    assert "no line detector weights at models/line_detector/line_detector.pt" in result.output
    assert "Traceback" not in result.output
