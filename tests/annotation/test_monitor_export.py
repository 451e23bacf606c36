"""``quill monitor export --slice``: a misspelt slice is a usage error naming the known keys
and values, and an export that wrote no task (nothing matched, or no matched prediction kept
its image) exits 1 and never replaces tasks already written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from quill.monitoring.records import PredictionRecord
from quill.monitoring.store import MonitoringStore


def line_png(text: str) -> bytes:
    """A dark-on-light line, PNG encoded, as a user would send it."""
    image = Image.new("L", (320, 48), 235)
    ImageDraw.Draw(image).text((8, 12), text, fill=30, font=ImageFont.load_default(22))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def store_args(tmp_path: Path) -> list[str]:
    """A store holding two flagged dark-on-light predictions."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    for rid, text in (("r0", "Dear Sir"), ("r1", "I thank you")):
        store.log_prediction(PredictionRecord(rid, "api", "m-1", line_png(text), text, 0.7, 20.0))
        store.add_feedback(rid, "incorrect")
    store.close()
    return ["--url", url, "--images", str(tmp_path / "images")]


def export(out: Path, store_args: list[str], *options: str) -> tuple[int, str]:
    args = ["monitor", "export", "--out", str(out), *options, *store_args]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.fixture
def tasks_file(tmp_path: Path, store_args: list[str]) -> Path:
    """Tasks an earlier export wrote, not yet pushed to Label Studio."""
    out = tmp_path / "ls" / "tasks.json"
    code, output = export(out, store_args, "--slice", "polarity=dark-on-light")
    assert code == EXIT_OK, output
    assert len(json.loads(out.read_text())) == 2
    return out


@pytest.mark.parametrize(
    ("slice_", "named"),
    [
        ("polarity=dark_on_light", "known: dark-on-light, light-on-dark, unknown"),
        ("polarty=dark-on-light", "known: client, model_version, polarity, size_bucket"),
        ("size_bucket=huge", "known: small, medium, large, unknown"),
    ],
)
def test_an_unknown_slice_key_or_value_is_a_usage_error_naming_the_known_ones(
    tasks_file: Path, store_args: list[str], slice_: str, named: str
) -> None:
    before = tasks_file.read_text()
    code, output = export(tasks_file, store_args, "--slice", slice_)
    assert code == EXIT_ERROR, output
    assert named in " ".join(output.split())  # the usage box wraps long messages
    assert tasks_file.read_text() == before


def test_free_valued_slices_are_taken_as_given(tmp_path: Path, store_args: list[str]) -> None:
    out = tmp_path / "by-client.json"
    code, output = export(out, store_args, "--slice", "client=api", "--slice", "model_version=m-1")
    assert code == EXIT_OK, output
    assert len(json.loads(out.read_text())) == 2


def test_an_export_that_matched_nothing_leaves_existing_tasks_alone(
    tasks_file: Path, store_args: list[str]
) -> None:
    before = tasks_file.read_text()
    code, output = export(tasks_file, store_args, "--slice", "polarity=light-on-dark")
    assert code == EXIT_FAILED, output
    assert f"{tasks_file} left as it was" in " ".join(output.split())
    assert tasks_file.read_text() == before


@pytest.mark.parametrize(
    "options", [("--slice", "polarity=light-on-dark"), ("--corrected",)], ids=["slice", "corrected"]
)
def test_an_export_that_matched_nothing_writes_a_new_empty_file_and_exits_1(
    tmp_path: Path, store_args: list[str], options: tuple[str, ...]
) -> None:
    out = tmp_path / "new.json"
    code, output = export(out, store_args, *options)
    assert code == EXIT_FAILED, output
    assert json.loads(out.read_text()) == []
    assert "no prediction matched the filters; wrote an empty task list" in " ".join(output.split())


@pytest.fixture
def imageless_store_args(tmp_path: Path) -> list[str]:
    """A store holding one flagged prediction whose image was not kept (privacy setting)."""
    url = f"sqlite:///{tmp_path / 'private.db'}"
    images = tmp_path / "private-images"
    store = MonitoringStore(url, image_dir=images, retain_images=False)
    store.log_prediction(PredictionRecord("r9", "api", "m-1", line_png("Yours"), "Yours", 0.6, 9.0))
    store.add_feedback("r9", "incorrect")
    store.close()
    return ["--url", url, "--images", str(images)]


def test_an_export_whose_every_image_is_gone_leaves_existing_tasks_alone(
    tasks_file: Path, imageless_store_args: list[str]
) -> None:
    before = tasks_file.read_text()
    code, output = export(tasks_file, imageless_store_args, "--flagged")
    assert code == EXIT_FAILED, output
    flat = " ".join(output.split())
    assert "skipped r9: image not retained" in flat
    assert (
        f"none of the 1 matching prediction(s) has its image; {tasks_file} left as it was" in flat
    )
    assert tasks_file.read_text() == before


def test_an_export_whose_every_image_is_gone_exits_1_for_a_new_file(
    tmp_path: Path, imageless_store_args: list[str]
) -> None:
    out = tmp_path / "fresh" / "tasks.json"
    code, output = export(out, imageless_store_args, "--flagged")
    assert code == EXIT_FAILED, output
    assert json.loads(out.read_text()) == []
    assert not (out.parent / "images").exists()  # no folder made for images never copied
