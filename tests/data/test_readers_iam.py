"""IAM reader: line and paragraph crops from forms + XML, task-list and writer splits."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.data.readers.common import DatasetError
from quill.data.readers.geometry import bounding_box
from quill.data.readers.iam import find_split_lists, parse_iam_form, read_iam

from .conftest import IAM_FORMS


def test_lines_and_paragraphs_with_unescaped_text(iam_dir: Path, tmp_path: Path):
    result = read_iam(iam_dir, tmp_path / "out")
    assert result.report.skipped == []
    manifest = result.manifest
    lines = {s.meta["line"]: s.text for s in manifest if s.kind == "line"}
    assert lines["a01-000u-00"] == 'He said "no" & left.'
    assert len(lines) == 6
    paragraphs = {s.meta["form"]: s.text for s in manifest if s.kind == "paragraph"}
    assert paragraphs == {form: "\n".join(texts) for form, (_, texts) in IAM_FORMS.items()}


def test_without_task_lists_each_writer_stays_in_one_split(iam_dir: Path, tmp_path: Path):
    manifest = read_iam(iam_dir, tmp_path / "out").manifest
    splits = defaultdict(set)
    for sample in manifest:
        splits[sample.group].add(sample.split)
        assert sample.group == f"writer-{sample.meta['writer']}"
    assert len(splits) == 3 and all(len(s) == 1 for s in splits.values())


def test_task_lists_give_the_official_splits(iam_task_lists: Path, tmp_path: Path):
    assert find_split_lists(iam_task_lists) == {
        "a01-000u": "train",
        "a01-007": "val",
        "b02-010": "test",
    }
    manifest = read_iam(iam_task_lists, tmp_path / "out").manifest
    by_form = {s.meta["form"]: s.split for s in manifest}
    assert by_form == {"a01-000u": "train", "a01-007": "val", "b02-010": "test"}


def test_forms_outside_the_task_lists_are_reported(iam_task_lists: Path, tmp_path: Path):
    (iam_task_lists / "task" / "testset.txt").write_text("")
    result = read_iam(iam_task_lists, tmp_path / "out")
    (skip,) = result.report.skipped
    assert skip.where.endswith("b02-010.xml") and "split lists" in skip.reason
    assert {s.meta["form"] for s in result.manifest} == {"a01-000u", "a01-007"}


def test_downsampled_form_is_cropped_at_its_own_scale(iam_dir: Path, tmp_path: Path):
    manifest = read_iam(iam_dir, tmp_path / "out").manifest
    half = next(s for s in manifest if s.meta.get("line") == "b02-010-00")
    # The XML describes the full-size scan; the JPEG is half as large.
    layout = parse_iam_form(iam_dir / "xml" / "b02-010.xml", {})
    _, top, _, bottom = bounding_box(layout.regions[0].lines[0].polygon)
    assert Image.open(manifest.path_of(half)).height == pytest.approx((bottom - top) / 2, abs=2)
    # The half-size crop still holds its whole line: dark pixels reach neither edge.
    ink = np.asarray(Image.open(manifest.path_of(half)).convert("L")) < 128
    assert ink.any() and not ink[0].any() and not ink[-1].any()
    assert not ink[:, 0].any() and not ink[:, -1].any()


def test_missing_form_image_and_missing_folder(iam_dir: Path, tmp_path: Path):
    (iam_dir / "forms" / "a01-007.png").unlink()
    result = read_iam(iam_dir, tmp_path / "out")
    (skip,) = result.report.skipped
    assert skip.where.endswith("a01-007.xml") and "a01-007.png" in skip.reason
    assert result.report.total_loaded == 6
    with pytest.raises(DatasetError, match="nowhere"):
        read_iam(tmp_path / "nowhere", tmp_path / "out2")
